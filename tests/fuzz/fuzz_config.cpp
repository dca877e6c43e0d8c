// The YAML configuration loader and validator (seeded with config/ and its
// examples). A configuration is either accepted or refused with errors.
#include "svad/core/config.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const svad::core::ConfigLoad load = svad::core::parseConfig(text, "fuzz.yaml", "/plugins");
    // Exactly one of the two: a configuration, or why there is none.
    if ((load.config == nullptr) == load.errors.empty()) {
        std::abort();
    }
    return 0;
}
