// svactl's output: tables for people, JSON for programs.
#pragma once

#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <string>

namespace svad::cli {

using Properties = std::map<std::string, sdbus::Variant>;
using Objects = std::map<sdbus::ObjectPath, std::map<std::string, Properties>>;

// One object's properties, "Name: value" lines or one JSON object.
std::string renderProperties(const Properties& props, bool json, const std::string& path = {});
// devices | vdpa | groups | units | queues
std::string renderListing(const std::string& what, const Objects& objects, bool json,
                          bool pasidOnly);

} // namespace svad::cli
