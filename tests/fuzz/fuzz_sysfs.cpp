// Every sysfs attribute parser (numbers, ids, reserved_regions, driver and
// group links, VT-d registers, SR-IOV, queues, vDPA) through a whole
// discovery of a tree decoded from the bytes (mem_sysfs.h), seeded with
// generated hosts by svad-fuzz-seeds.
#include "mem_sysfs.h"
#include "svad/core/discovery.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const svad::fuzz::MemSysfs tree(data, size);
    (void)svad::core::discover(tree);
    return 0;
}
