// The host generator's YAML (seeded with config/hosts/): parsed and
// validated, or refused with a HostgenError.
#include "svad/hostgen/hostgen.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const svad::hostgen::HostSpec host = svad::hostgen::parseHostYaml(text, "fuzz.yaml");
        svad::hostgen::validateHost(host);
    } catch (const svad::hostgen::HostgenError&) {
        // a named refusal: fine
    }
    return 0;
}
