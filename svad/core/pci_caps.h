// PCI configuration-space capability parser. Input is untrusted: the bytes of
// a sysfs `config` file, which may be 64 bytes (unprivileged read), 256
// (conventional) or 4096 (extended), and may hold broken chains.
#pragma once

#include "svad/core/model.h"

#include <cstdint>
#include <span>

namespace svad::core {

// Walks the standard and extended capability lists of `config`. Never reads
// outside `config`, never loops: every anomaly (loop, backward or misaligned
// pointer, a capability running past the end, a truncated file) becomes a
// warning in the result and ends that walk.
PciCapabilities parsePciConfig(std::span<const uint8_t> config);

} // namespace svad::core
