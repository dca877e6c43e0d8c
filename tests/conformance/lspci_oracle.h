// The conformance oracle: what `lspci -F DUMP -vvv -D` (pciutils) reports
// about the capabilities of each device of a dump, parsed from its text.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace svad::conformance {

struct LspciDevice {
    std::string address; // DDDD:BB:DD.F (lspci -D)

    // "Capabilities: [xx]" lines below 0x100, without <chain looped>/<chain broken>.
    size_t standardCount = 0;
    // "Capabilities: [xxx vN]" lines, without <chain looped>: offset and version.
    std::vector<std::pair<uint16_t, uint8_t>> extended;

    // Details of the first capability of each kind; nullopt when lspci printed
    // the capability's name but not that line.
    bool pasid = false;
    std::optional<bool> pasidExec;
    std::optional<bool> pasidPriv;
    std::optional<uint32_t> pasidMaxWidth; // lspci prints it in hex

    bool ats = false;
    std::optional<uint32_t> atsInvalidateQueueDepth;
    std::optional<bool> atsEnabled;
    std::optional<uint32_t> atsSmallestTranslationUnit;

    bool pri = false;
    std::optional<bool> priEnabled;
    std::optional<uint32_t> priCapacity;

    bool acs = false;
    std::optional<uint16_t> acsCapability; // the seven flags lspci prints, bits 6:0
    std::optional<uint16_t> acsControl;

    bool sriov = false;
    std::optional<uint16_t> sriovInitialVfs, sriovTotalVfs, sriovNumVfs;
    std::optional<uint16_t> sriovFirstVfOffset, sriovVfStride, sriovVfDeviceId;

    struct Dvsec {
        uint16_t offset = 0;
        uint16_t vendor = 0;
        uint16_t id = 0;
        uint8_t revision = 0;
    };
    std::vector<Dvsec> dvsecs;
};

// Parses `lspci -vvv -D` text; devices by address.
std::map<std::string, LspciDevice> parseLspci(const std::string& text);

// Runs `lspci -F path -vvv -D` and returns its standard output; stderr is
// dropped. nullopt when lspci could not be run or failed.
std::optional<std::string> runLspci(const std::string& dumpPath);

} // namespace svad::conformance
