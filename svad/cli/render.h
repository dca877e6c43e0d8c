// svactl's output: tables for people, JSON for programs.
#pragma once

#include "svad/cli/value.h"

#include <cstdint>
#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <set>
#include <string>
#include <vector>

namespace svad::cli {

// Listed properties (decoded straight from a listing), and properties as a
// proxy's call or signal gives them.
using Properties = std::map<std::string, Value>;
using VariantProperties = std::map<std::string, sdbus::Variant>;
using Objects = std::map<sdbus::ObjectPath, std::map<std::string, Properties>>;

// One object's properties of interface `iface`: "Name: value" lines for a person
// (enumerations by name, times as dates, objects by their names, "-" for none), or
// one JSON object with the exact values.
std::string renderProperties(const Properties& props, bool json, const std::string& path = {},
                             const std::string& iface = {});
std::string renderProperties(const VariantProperties& props, bool json,
                             const std::string& path = {}, const std::string& iface = {});
// The object path prefix of a listing: devices | vdpa | groups | units | queues.
std::string listingPrefix(const std::string& what);
// The properties a listing's table shows (renderListing reads no other).
const std::set<std::string>& listingColumns(const std::string& what);
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

// One value as text or as JSON (any type svad uses, "<sig>"/null for others); with
// the interface, its enumerations read as names.
std::string renderValue(const std::string& name, const sdbus::Variant& v, bool json,
                        const std::string& iface = {});
std::string renderValue(const std::string& name, const Value& v, bool json,
                        const std::string& iface = {});
// The name of value `value` of enumeration property `iface`.`name`
// ("org.svad.Svad1.Queue", "Mode", 2 -> "shared"), or "unknown (N)".
std::string enumName(const std::string& iface, const std::string& name, uint64_t value);
// What a person calls the object at `path`: "0000:6a:01.0", "wq0.0", "dmar0", "12",
// "context 3"; "-" for "/" (no object); any other path as it is.
std::string objectLabel(const std::string& path);
// CLOCK_REALTIME microseconds as a local date and how long ago that was
// ("2026-11-30 08:40:12 UTC (3 s ago)"); 0 is "never".
std::string timeText(uint64_t usec, uint64_t nowUsec);
std::string jsonString(const std::string& s);
// Columns padded to the widest cell, two spaces apart; the first row is the header.
std::string renderTable(const std::vector<std::vector<std::string>>& rows);
// What an fd of this process is: the target of /proc/self/fd/N ("/dev/iommu",
// "/memfd:svad-sim:iommufd:1 (deleted)"), or "?" when it cannot be read.
std::string fdTarget(int fd);

} // namespace svad::cli
