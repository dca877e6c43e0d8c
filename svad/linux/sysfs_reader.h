// The linux Sysfs port: reads a sysfs tree under a root directory (/sys on a
// real host, a generated tree in tests).
#pragma once

#include <string>

#include "svad/ports/sysfs.h"

namespace svad::linux_impl {

class SysfsReader final : public ports::Sysfs {
public:
    explicit SysfsReader(std::string root);

    std::optional<std::string> readText(const std::string& path) const override;
    std::optional<std::vector<uint8_t>> readBinary(const std::string& path,
                                                   size_t maxBytes) const override;
    std::optional<std::vector<std::string>> list(const std::string& path) const override;
    std::optional<std::string> readLink(const std::string& path) const override;
    bool exists(const std::string& path) const override;

    const std::string& root() const { return root_; }

private:
    std::string full(const std::string& path) const;
    std::string root_;
};

}  // namespace svad::linux_impl
