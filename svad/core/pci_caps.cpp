// PCI configuration-space capability parser (see pci_caps.h).
//
// Everything here reads untrusted bytes: every access goes through the
// bounds-checked little-endian readers below, and both walks are bounded by a
// visited set and an entry budget, so no input can make them read out of
// bounds or loop.
//
// Behaviour, where it matters, follows lspci (pciutils 3.9, ls-caps.c and
// ls-ecaps.c) and the kernel (drivers/pci/pci.c, probe.c):
//  - next pointers of the standard list have their low two bits masked;
//  - a standard capability with id 0xff ends the list ("chain broken");
//  - an extended header of 0 or 0xffffffff ends the extended list;
//  - extended capabilities may legitimately point backwards (real switches
//    do: see the cap-multicast and cap-exp-lnkcap2 dumps); only a revisit is
//    a loop;
//  - extended space that merely mirrors the first 256 bytes (a device that
//    does not decode extended config cycles; the kernel's
//    pci_ext_cfg_is_aliased) holds no capabilities.
#include "svad/core/pci_caps.h"

#include <array>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <string>

namespace svad::core {
namespace {

constexpr size_t kHeaderSize = 0x40;        // standard header; capabilities start here
constexpr size_t kConventionalSize = 0x100; // conventional config space
constexpr size_t kExtendedSize = 0x1000;    // PCI Express extended config space
constexpr size_t kMaxStandardCaps = 48;     // (256 - 64) / 4
constexpr size_t kMaxExtendedCaps = (kExtendedSize - kConventionalSize) / 4;

// Standard header registers.
constexpr size_t kStatus = 0x06;
constexpr uint16_t kStatusCapList = 1u << 4;
constexpr size_t kHeaderType = 0x0e;
constexpr size_t kCapPtr = 0x34;
constexpr size_t kCardbusCapPtr = 0x14;
constexpr uint8_t kHeaderTypeCardbus = 2;

// Capability ids.
constexpr uint8_t kCapIdExpress = 0x10;
constexpr uint16_t kExtIdAcs = 0x0d;
constexpr uint16_t kExtIdAts = 0x0f;
constexpr uint16_t kExtIdSriov = 0x10;
constexpr uint16_t kExtIdPri = 0x13;
constexpr uint16_t kExtIdPasid = 0x1b;
constexpr uint16_t kExtIdDvsec = 0x23;

// Bytes of each decoded extended capability structure (header included).
constexpr size_t kAcsSize = 0x08;   // header, capability, control
constexpr size_t kAtsSize = 0x08;   // header, capability, control
constexpr size_t kPriSize = 0x10;   // header, control/status, capacity, allocation
constexpr size_t kPasidSize = 0x08; // header, capability, control
constexpr size_t kSriovSize = 0x40; // through the VF migration state register
constexpr size_t kDvsecSize = 0x0a; // header, DVSEC header 1, DVSEC header 2

constexpr uint16_t kIntelVendor = 0x8086;
constexpr uint16_t kDvsecIdSiov = 5;

// ---- bounds-checked little-endian readers ----------------------------------

class Config {
public:
    explicit Config(std::span<const uint8_t> bytes) : bytes_(bytes) {}

    size_t size() const { return bytes_.size(); }

    // True when [offset, offset + length) lies inside the buffer.
    bool has(size_t offset, size_t length) const {
        return offset <= bytes_.size() && length <= bytes_.size() - offset;
    }

    std::optional<uint8_t> u8(size_t offset) const {
        if (!has(offset, 1)) {
            return std::nullopt;
        }
        return bytes_[offset];
    }
    std::optional<uint16_t> u16(size_t offset) const {
        if (!has(offset, 2)) {
            return std::nullopt;
        }
        return static_cast<uint16_t>(bytes_[offset] | (bytes_[offset + 1] << 8));
    }
    std::optional<uint32_t> u32(size_t offset) const {
        if (!has(offset, 4)) {
            return std::nullopt;
        }
        return static_cast<uint32_t>(bytes_[offset]) |
               (static_cast<uint32_t>(bytes_[offset + 1]) << 8) |
               (static_cast<uint32_t>(bytes_[offset + 2]) << 16) |
               (static_cast<uint32_t>(bytes_[offset + 3]) << 24);
    }

    // For registers whose presence the caller has already checked with has().
    uint16_t u16Or0(size_t offset) const { return u16(offset).value_or(0); }
    uint32_t u32Or0(size_t offset) const { return u32(offset).value_or(0); }

private:
    std::span<const uint8_t> bytes_;
};

std::string hex(uint32_t value, int digits) {
    std::array<char, 16> buf{};
    (void)std::snprintf(buf.data(), buf.size(), "0x%0*x", digits, value);
    return buf.data();
}

// ---- standard capability list ------------------------------------------------

// Returns false when the walk could not see the whole list because the buffer
// is shorter than the conventional 256 bytes (the caller words the warning
// about extended capabilities accordingly).
bool walkStandard(const Config& cfg, PciCapabilities& caps) {
    const size_t size = cfg.size();
    if (size < kHeaderSize) {
        caps.warnings.push_back("config space truncated to " + std::to_string(size) +
                                " bytes: standard header incomplete, capabilities not readable");
        return false;
    }
    if ((cfg.u16Or0(kStatus) & kStatusCapList) == 0) {
        return true;
    }

    const uint8_t headerType = cfg.u8(kHeaderType).value_or(0) & 0x7f;
    const size_t ptrReg = headerType == kHeaderTypeCardbus ? kCardbusCapPtr : kCapPtr;
    std::array<bool, kConventionalSize> seen{};
    size_t ptr = cfg.u8(ptrReg).value_or(0) & ~size_t{3};
    size_t from = ptrReg; // where `ptr` was read, for the warnings

    while (ptr != 0) {
        if (caps.standard.size() >= kMaxStandardCaps) {
            caps.warnings.push_back("standard capability list longer than " +
                                    std::to_string(kMaxStandardCaps) + " entries: walk ended at " +
                                    hex(static_cast<uint32_t>(ptr), 2));
            return true;
        }
        if (ptr < kHeaderSize) {
            caps.warnings.push_back(
                "standard capability pointer " + hex(static_cast<uint32_t>(ptr), 2) + " at " +
                hex(static_cast<uint32_t>(from), 2) + " points into the header: list ends there");
            return true;
        }
        if (!cfg.has(ptr, 2)) {
            if (size < kConventionalSize) {
                caps.warnings.push_back("config space truncated to " + std::to_string(size) +
                                        " bytes: standard capability at " +
                                        hex(static_cast<uint32_t>(ptr), 2) + " not readable");
                return false;
            }
            caps.warnings.push_back(
                "standard capability pointer " + hex(static_cast<uint32_t>(ptr), 2) + " at " +
                hex(static_cast<uint32_t>(from), 2) + " points past the end of config space");
            return true;
        }
        if (seen[ptr]) {
            caps.warnings.push_back("standard capability list loops back to " +
                                    hex(static_cast<uint32_t>(ptr), 2) + " (pointer at " +
                                    hex(static_cast<uint32_t>(from), 2) + "): list ends there");
            return true;
        }
        seen[ptr] = true;
        const uint8_t id = cfg.u8(ptr).value_or(0xff);
        if (id == 0xff) {
            caps.warnings.push_back("standard capability at " + hex(static_cast<uint32_t>(ptr), 2) +
                                    " has id 0xff (chain broken): list ends there");
            return true;
        }
        caps.standard.push_back(id);
        if (id == kCapIdExpress) {
            caps.express = true;
        }
        from = ptr + 1;
        ptr = cfg.u8(ptr + 1).value_or(0) & ~size_t{3};
    }
    return true;
}

// ---- extended capabilities ------------------------------------------------------

// The kernel's pci_ext_cfg_is_aliased(): a device that does not decode
// extended config cycles returns its first dword at every 256-byte boundary.
bool extendedSpaceAliased(const Config& cfg) {
    const auto first = cfg.u32(0);
    if (!first) {
        return false;
    }
    bool any = false;
    for (size_t pos = kConventionalSize; pos < kExtendedSize && cfg.has(pos, 4);
         pos += kConventionalSize) {
        if (cfg.u32(pos) != first) {
            return false;
        }
        any = true;
    }
    return any;
}

std::string duplicateWarning(const char* name, uint16_t offset, uint16_t first) {
    return std::string("second ") + name + " capability at " + hex(offset, 3) +
           " ignored (first at " + hex(first, 3) + ")";
}

void decodeExtended(const Config& cfg, uint16_t id, uint16_t off, PciCapabilities& caps) {
    switch (id) {
    case kExtIdPasid: {
        if (caps.pasid.present) {
            caps.warnings.push_back(duplicateWarning("PASID", off, caps.pasid.offset));
            return;
        }
        const uint16_t reg = cfg.u16Or0(off + 4u);
        caps.pasid.present = true;
        caps.pasid.offset = off;
        caps.pasid.exec = (reg & (1u << 1)) != 0;
        caps.pasid.priv = (reg & (1u << 2)) != 0;
        caps.pasid.maxWidth = (reg >> 8) & 0x1f;
        return;
    }
    case kExtIdAts: {
        if (caps.ats.present) {
            caps.warnings.push_back(duplicateWarning("ATS", off, caps.ats.offset));
            return;
        }
        const uint16_t reg = cfg.u16Or0(off + 4u);
        const uint16_t ctl = cfg.u16Or0(off + 6u);
        caps.ats.present = true;
        caps.ats.offset = off;
        caps.ats.invalidateQueueDepth = reg & 0x1f;
        caps.ats.pageAligned = (reg & (1u << 5)) != 0;
        caps.ats.enabled = (ctl & (1u << 15)) != 0;
        caps.ats.smallestTranslationUnit = ctl & 0x1f;
        return;
    }
    case kExtIdPri: {
        if (caps.pri.present) {
            caps.warnings.push_back(duplicateWarning("PRI", off, caps.pri.offset));
            return;
        }
        caps.pri.present = true;
        caps.pri.offset = off;
        caps.pri.enabled = (cfg.u16Or0(off + 4u) & 1u) != 0;
        caps.pri.outstandingCapacity = cfg.u32Or0(off + 8u);
        return;
    }
    case kExtIdAcs: {
        if (caps.acs.present) {
            caps.warnings.push_back(duplicateWarning("ACS", off, caps.acs.offset));
            return;
        }
        caps.acs.present = true;
        caps.acs.offset = off;
        caps.acs.capability = cfg.u16Or0(off + 4u);
        caps.acs.control = cfg.u16Or0(off + 6u);
        return;
    }
    case kExtIdSriov: {
        if (caps.sriov.present) {
            caps.warnings.push_back(duplicateWarning("SR-IOV", off, caps.sriov.offset));
            return;
        }
        caps.sriov.present = true;
        caps.sriov.offset = off;
        caps.sriov.initialVfs = cfg.u16Or0(off + 0x0cu);
        caps.sriov.totalVfs = cfg.u16Or0(off + 0x0eu);
        caps.sriov.numVfs = cfg.u16Or0(off + 0x10u);
        caps.sriov.firstVfOffset = cfg.u16Or0(off + 0x14u);
        caps.sriov.vfStride = cfg.u16Or0(off + 0x16u);
        caps.sriov.vfDeviceId = cfg.u16Or0(off + 0x1au);
        return;
    }
    case kExtIdDvsec: {
        const uint32_t h1 = cfg.u32Or0(off + 4u);
        Dvsec d;
        d.offset = off;
        d.vendor = static_cast<uint16_t>(h1 & 0xffff);
        d.revision = static_cast<uint8_t>((h1 >> 16) & 0xf);
        d.id = cfg.u16Or0(off + 8u);
        caps.dvsecs.push_back(d);
        if (d.vendor == kIntelVendor && d.id == kDvsecIdSiov) {
            caps.siov = true;
        }
        return;
    }
    default:
        return;
    }
}

// Bytes a capability needs for us to decode it; 4 (the header) for the rest.
size_t structureSize(uint16_t id) {
    switch (id) {
    case kExtIdPasid:
        return kPasidSize;
    case kExtIdAts:
        return kAtsSize;
    case kExtIdPri:
        return kPriSize;
    case kExtIdAcs:
        return kAcsSize;
    case kExtIdSriov:
        return kSriovSize;
    case kExtIdDvsec:
        return kDvsecSize;
    default:
        return 4;
    }
}

void walkExtended(const Config& cfg, PciCapabilities& caps) {
    const auto first = cfg.u32(kConventionalSize);
    if (!first || *first == 0 || *first == 0xffffffffu) {
        return;
    }
    if (extendedSpaceAliased(cfg)) {
        caps.warnings.push_back(
            "extended config space mirrors the standard header (dword " + hex(*first, 8) +
            " at 0x100): the device does not decode it, extended capabilities ignored");
        return;
    }

    std::array<bool, kExtendedSize / 4> seen{};
    size_t off = kConventionalSize;
    size_t from = 0; // offset of the header that pointed to `off` (0: the start)

    for (;;) {
        if (caps.extended.size() >= kMaxExtendedCaps) {
            caps.warnings.push_back("extended capability list longer than " +
                                    std::to_string(kMaxExtendedCaps) + " entries: walk ended at " +
                                    hex(static_cast<uint32_t>(off), 3));
            return;
        }
        const auto header = cfg.u32(off);
        if (!header) {
            caps.warnings.push_back(
                "extended capability pointer " + hex(static_cast<uint32_t>(off), 3) + " at " +
                hex(static_cast<uint32_t>(from), 3) + " points past the end of config space (" +
                std::to_string(cfg.size()) + " bytes)");
            return;
        }
        if (*header == 0 || *header == 0xffffffffu) {
            caps.warnings.push_back(
                "extended capability pointer " + hex(static_cast<uint32_t>(off), 3) + " at " +
                hex(static_cast<uint32_t>(from), 3) + " leads to an empty header (" +
                hex(*header, 8) + "): list ends there");
            return;
        }
        if (seen[off / 4]) {
            caps.warnings.push_back("extended capability list loops back to " +
                                    hex(static_cast<uint32_t>(off), 3) + " (pointer at " +
                                    hex(static_cast<uint32_t>(from), 3) + "): list ends there");
            return;
        }
        seen[off / 4] = true;

        ExtCap ext;
        ext.offset = static_cast<uint16_t>(off);
        ext.id = static_cast<uint16_t>(*header & 0xffff);
        ext.version = static_cast<uint8_t>((*header >> 16) & 0xf);
        caps.extended.push_back(ext);

        const size_t need = structureSize(ext.id);
        if (!cfg.has(off, need)) {
            caps.warnings.push_back(
                "extended capability " + hex(ext.id, 4) + " at " + hex(ext.offset, 3) +
                " runs past the end of config space (" + std::to_string(need) + " bytes needed, " +
                std::to_string(cfg.size() - off) + " available): not decoded, list ends there");
            return;
        }
        decodeExtended(cfg, ext.id, ext.offset, caps);

        const size_t next = *header >> 20;
        if (next == 0) {
            return;
        }
        if (next < kConventionalSize) {
            caps.warnings.push_back("extended capability at " + hex(ext.offset, 3) + " points to " +
                                    hex(static_cast<uint32_t>(next), 3) +
                                    ", below 0x100: list ends there");
            return;
        }
        if (next % 4 != 0) {
            caps.warnings.push_back("extended capability at " + hex(ext.offset, 3) +
                                    " has a misaligned next pointer " +
                                    hex(static_cast<uint32_t>(next), 3) + ": list ends there");
            return;
        }
        from = off;
        off = next;
    }
}

} // namespace

PciCapabilities parsePciConfig(std::span<const uint8_t> config) {
    PciCapabilities caps;
    const Config cfg(config);

    const bool standardComplete = walkStandard(cfg, caps);

    if (cfg.size() < kConventionalSize) {
        // Unprivileged reads of sysfs config stop at 64 bytes.
        if (caps.express || !standardComplete) {
            caps.warnings.push_back("config space truncated to " + std::to_string(cfg.size()) +
                                    " bytes: extended capabilities not readable");
        }
        return caps;
    }
    if (cfg.has(kConventionalSize, 4)) {
        walkExtended(cfg, caps);
    }
    return caps;
}

} // namespace svad::core
