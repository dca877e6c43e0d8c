// VT-d cap and ecap decoding: the two registers from 16 bytes.
#include "svad/core/vtd.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint64_t regs[2] = {0, 0};
    std::memcpy(regs, data, size < sizeof regs ? size : sizeof regs);
    (void)svad::core::decodeVtd(regs[0], regs[1]);
    return 0;
}
