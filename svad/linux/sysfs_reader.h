// The linux Sysfs port: reads a sysfs tree under a root directory (/sys on a
// real host, a generated tree in tests).
//
// Reads resolve relative to a directory handle: the root's, or the last
// directory used, which is kept open, so that reading the attributes of one
// device walks its path once. One reader serves one thread at a time.
//
// Attributes are opened O_NONBLOCK and read only when they are regular files
// (a FIFO or a device node where an attribute belongs is refused, with a note
// saying what it is), and never past the bytes asked for (a cut is noted).
#pragma once

#include "svad/ports/sysfs.h"

#include <string>

namespace svad::linux_impl {

class SysfsReader final : public ports::Sysfs {
public:
    explicit SysfsReader(std::string root);
    ~SysfsReader() override;
    SysfsReader(const SysfsReader&) = delete;
    SysfsReader& operator=(const SysfsReader&) = delete;

    // Reads at most kMaxText bytes of a text attribute.
    static constexpr size_t kMaxText = size_t{64} * 1024;

    ports::Read<std::string> readText(const std::string& path) const override;
    ports::Read<std::vector<uint8_t>> readBinary(const std::string& path,
                                                 size_t maxBytes) const override;
    std::optional<std::vector<std::string>> list(const std::string& path) const override;
    std::optional<std::string> readLink(const std::string& path) const override;
    bool exists(const std::string& path) const override;

    const std::string& root() const { return root_; }

private:
    struct At {
        int dirFd;        // -1 when the directory does not exist
        const char* name; // relative to dirFd
    };
    // Splits `path` into a directory handle and a name; `scratch` holds the name.
    At resolve(const std::string& path, std::string& scratch) const;

    std::string root_;
    int rootFd_ = -1;
    mutable std::string cachedDir_;
    mutable int cachedFd_ = -1;
    mutable bool cacheValid_ = false;
};

} // namespace svad::linux_impl
