// svactl's output: tables for people, JSON for programs.
#pragma once

#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::cli {

using Properties = std::map<std::string, sdbus::Variant>;
using Objects = std::map<sdbus::ObjectPath, std::map<std::string, Properties>>;

// One object's properties, "Name: value" lines or one JSON object.
std::string renderProperties(const Properties& props, bool json, const std::string& path = {});
// devices | vdpa | groups | units | queues
std::string renderListing(const std::string& what, const Objects& objects, bool json,
                          bool pasidOnly);
// The contexts among `objects`: a table (CONTEXT VM OWNER MODE STATE DEVICES PASIDS), or a
// JSON array of their properties.
std::string renderContexts(const Objects& objects, bool json);

// The Plugins and PluginRefusals properties: a table of the loaded plugins and the
// refused files, or {"plugins": [...], "refused": [...]}.
std::string
renderPlugins(const std::vector<sdbus::Struct<std::string, std::string, std::string, uint32_t,
                                              std::vector<std::string>>>& plugins,
              const std::vector<sdbus::Struct<std::string, std::string>>& refused, bool json);

// One value as text or as JSON (any type svad uses, "<sig>"/null for others).
std::string renderValue(const std::string& name, const sdbus::Variant& v, bool json);
std::string jsonString(const std::string& s);
// Columns padded to the widest cell, two spaces apart; the first row is the header.
std::string renderTable(const std::vector<std::vector<std::string>>& rows);
// What an fd of this process is: the target of /proc/self/fd/N ("/dev/iommu",
// "/memfd:svad-sim:iommufd:1 (deleted)"), or "?" when it cannot be read.
std::string fdTarget(int fd);

} // namespace svad::cli
