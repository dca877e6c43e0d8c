// The PCI configuration-space parser: the capability walk and every decoder,
// on any bytes (seeded with the 41 real dumps by svad-fuzz-seeds).
#include "svad/core/pci_caps.h"

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // A configuration space is at most 4096 bytes; discovery reads no more.
    const size_t n = size < 4096 ? size : 4096;
    (void)svad::core::parsePciConfig(std::span<const uint8_t>(data, n));
    return 0;
}
