// Reads the configuration file for core::parseConfig: only a regular file of
// at most core::kMaxConfigBytes, opened without blocking, so that a FIFO, a
// device node, a directory or a huge file at the path is an error rather than
// a frozen or blinded daemon. --check-config, start-up and Reload share it.
#pragma once

#include "svad/core/config.h"

#include <string>

namespace svad::linux_impl {

core::ConfigLoad loadConfig(const std::string& path, const std::string& defaultPluginDir);

} // namespace svad::linux_impl
