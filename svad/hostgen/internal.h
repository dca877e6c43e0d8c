// Helpers shared by the host generator's sources. Not a public interface.
#pragma once

#include "svad/hostgen/hostgen.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace svad::hostgen::detail {

struct PciAddr {
    uint16_t domain = 0;
    uint8_t bus = 0;
    uint8_t dev = 0; // 0..31
    uint8_t fn = 0;  // 0..7

    uint16_t rid() const { return static_cast<uint16_t>(bus << 8 | dev << 3 | fn); }
    static PciAddr fromRid(uint16_t domain, uint32_t rid) {
        return PciAddr{domain, static_cast<uint8_t>(rid >> 8),
                       static_cast<uint8_t>((rid >> 3) & 0x1f), static_cast<uint8_t>(rid & 7)};
    }
};

// Exactly DDDD:BB:DD.F (hex, either case), device <= 0x1f, function <= 7.
std::optional<PciAddr> parseAddress(std::string_view text);
// Lower-case DDDD:BB:DD.F.
std::string formatAddress(const PciAddr& a);

// A name usable as one path component in the tree: [A-Za-z0-9_.:+-], not "." or "..".
bool isSafeName(std::string_view name);

// Where an entry of a host description came from, given a path such as
// "devices[3].group". Returns a message prefix ("file:12:5: " or "devices[3].group: ").
using Locate = std::function<std::string(const std::string& path)>;

// validateHost with locations for the messages.
void validateHostAt(const HostSpec& host, const Locate& locate);

// The idxd number of "dsa3"/"iax5"; nullopt if the name is not one.
std::optional<uint32_t> idxdNumber(std::string_view name);
// "wq3.1" -> {3, 1}.
std::optional<std::pair<uint32_t, uint32_t>> queueNumbers(std::string_view name);

// The default IOMMU reserved regions of an x86 group (the MSI window).
inline constexpr const char* kMsiRegion = "0x00000000fee00000 0x00000000feefffff msi";

} // namespace svad::hostgen::detail
