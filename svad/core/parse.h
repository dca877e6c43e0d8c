// Strict parsers for sysfs attribute text. sysfs is input: every value is
// checked, and a failure is a value the caller turns into a warning.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace svad::core {

// "0x8086", "8086" (base 16). Surrounding whitespace allowed; anything else rejects.
std::optional<uint64_t> parseHex(std::string_view text);
// "42", "-1" (base 10).
std::optional<int64_t> parseDec(std::string_view text);
// DDDD:BB:DD.F with hex digits, device <= 0x1f, function <= 7.
bool isPciAddress(std::string_view text);
// Last component of a path ("../../bus/pci/drivers/vfio-pci" -> "vfio-pci").
std::string baseName(std::string_view path);
// D-Bus object path label: [A-Za-z0-9_] kept, anything else becomes _xx (hex).
// PCI addresses read naturally: 0000:6a:01.0 -> 0000_6a_01_0.
std::string pathLabel(std::string_view name);
// The name a label was made from (pathLabel's inverse): "wq0_2e0" -> "wq0.0",
// "0000_6a_01_0" -> "0000:6a:01.0". A label pathLabel cannot have made is
// returned as it is.
std::string labelName(std::string_view label);

} // namespace svad::core
