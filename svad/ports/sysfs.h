// The port through which discovery reads sysfs. Paths are relative to the
// sysfs root ("bus/pci/devices"). The linux implementation reads a real tree
// under a configurable root; tests hand it generated trees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace svad::ports {

// What one read found: a value or none, and in words why there is none or not
// all of it ("a FIFO, not a regular file", "cut at 65536 of 1048576 bytes");
// no note when the attribute is simply absent or was read whole.
template <typename T> struct Read {
    std::optional<T> value;
    std::string note;

    Read() = default;
    Read(std::nullopt_t /*none*/) {}
    Read(T v) : value(std::move(v)) {}
    Read(std::optional<T> v, std::string why) : value(std::move(v)), note(std::move(why)) {}
    explicit operator bool() const { return value.has_value(); }
    const T& operator*() const { return *value; }
    T& operator*() { return *value; }
    const T* operator->() const { return &*value; }
};

class Sysfs {
public:
    virtual ~Sysfs() = default;
    // Text attribute with the trailing newline removed; none if it cannot be read.
    // An implementation reads regular files only and a bounded number of bytes.
    virtual Read<std::string> readText(const std::string& path) const = 0;
    // Binary attribute, at most maxBytes; none if it cannot be read.
    virtual Read<std::vector<uint8_t>> readBinary(const std::string& path,
                                                  size_t maxBytes) const = 0;
    // Entry names of a directory (no "." or ".."), sorted; nullopt if it is not one.
    virtual std::optional<std::vector<std::string>> list(const std::string& path) const = 0;
    // Target of a symbolic link as stored; nullopt if it is not a link.
    virtual std::optional<std::string> readLink(const std::string& path) const = 0;
    virtual bool exists(const std::string& path) const = 0;
};

} // namespace svad::ports
