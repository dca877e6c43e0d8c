// The port through which discovery reads sysfs. Paths are relative to the
// sysfs root ("bus/pci/devices"). The linux implementation reads a real tree
// under a configurable root; tests hand it generated trees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace svad::ports {

class Sysfs {
public:
    virtual ~Sysfs() = default;
    // Text attribute with the trailing newline removed; nullopt if it cannot be read.
    virtual std::optional<std::string> readText(const std::string& path) const = 0;
    // Binary attribute, at most maxBytes; nullopt if it cannot be read.
    virtual std::optional<std::vector<uint8_t>> readBinary(const std::string& path,
                                                           size_t maxBytes) const = 0;
    // Entry names of a directory (no "." or ".."), sorted; nullopt if it is not one.
    virtual std::optional<std::vector<std::string>> list(const std::string& path) const = 0;
    // Target of a symbolic link as stored; nullopt if it is not a link.
    virtual std::optional<std::string> readLink(const std::string& path) const = 0;
    virtual bool exists(const std::string& path) const = 0;
};

} // namespace svad::ports
