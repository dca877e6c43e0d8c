// Synthetic PCI configuration spaces: a type-0 header, the PCI Express and
// MSI-X capabilities, and the extended capabilities a device spec asks for.
#include "svad/hostgen/hostgen.h"
#include "svad/hostgen/internal.h"

namespace svad::hostgen {

namespace {

class Space {
public:
    explicit Space(size_t size) : bytes_(size, 0) {}

    void put8(size_t off, uint8_t v) {
        if (off < bytes_.size()) {
            bytes_[off] = v;
        }
    }
    void put16(size_t off, uint16_t v) {
        put8(off, static_cast<uint8_t>(v));
        put8(off + 1, static_cast<uint8_t>(v >> 8));
    }
    void put32(size_t off, uint32_t v) {
        put16(off, static_cast<uint16_t>(v));
        put16(off + 2, static_cast<uint16_t>(v >> 16));
    }
    std::vector<uint8_t> take() { return std::move(bytes_); }

private:
    std::vector<uint8_t> bytes_;
};

constexpr uint16_t kPcieCap = 0x40; // PCI Express capability, 0x3c bytes (v2)
constexpr uint16_t kMsixCap = 0x80; // MSI-X, 12 bytes

// Extended capability ids.
constexpr uint16_t kExtAcs = 0x0d;
constexpr uint16_t kExtAts = 0x0f;
constexpr uint16_t kExtSriov = 0x10;
constexpr uint16_t kExtPri = 0x13;
constexpr uint16_t kExtPasid = 0x1b;
constexpr uint16_t kExtDvsec = 0x23;

struct Ext {
    uint16_t id;
    uint8_t version;
    uint16_t size; // bytes the capability occupies
};

// PCI-to-PCI bridges (class 0604xx, root ports) get a type-1 header.
bool isBridge(const DeviceSpec& d) {
    return (d.classCode >> 8) == 0x0604;
}

void writeHeader(Space& s, const DeviceSpec& d, bool caps) {
    s.put16(0x00, d.vendor);
    s.put16(0x02, d.device);
    s.put16(0x04, d.driver.empty() ? 0x0000 : 0x0406); // Mem, BusMaster, INTx disabled
    s.put16(0x06, caps ? 0x0010 : 0x0000);             // Status: capabilities list
    s.put8(0x08, d.revision);
    s.put8(0x09, static_cast<uint8_t>(d.classCode));
    s.put8(0x0a, static_cast<uint8_t>(d.classCode >> 8));
    s.put8(0x0b, static_cast<uint8_t>(d.classCode >> 16));
    s.put8(0x0c, 0x10); // cache line size
    if (isBridge(d)) {
        s.put8(0x0e, 0x01); // header type 1
        const auto a = detail::parseAddress(d.address);
        const uint8_t bus = a ? a->bus : 0;
        s.put8(0x18, bus);                           // primary bus
        s.put8(0x19, static_cast<uint8_t>(bus + 1)); // secondary bus
        s.put8(0x1a, static_cast<uint8_t>(bus + 1)); // subordinate bus
        s.put8(0x34, caps ? 0x40 : 0);
        s.put8(0x3c, 0xff);
        s.put8(0x3d, 0x01);
        return;
    }
    s.put8(0x0e, 0x00); // header type 0
    // BAR0: 64-bit prefetchable memory, an address derived from the function's place.
    if (d.physfn.empty()) {
        uint32_t h = 0;
        for (char c : d.address) {
            h = h * 31 + static_cast<uint8_t>(c);
        }
        s.put32(0x10, 0xc0000000u | ((h & 0x3fff) << 16) | 0x0c);
        s.put32(0x14, 0x00002000u);
    }
    s.put16(0x2c, d.subsystemVendor);
    s.put16(0x2e, d.subsystemDevice);
    s.put8(0x34, caps ? kPcieCap : 0);
    s.put8(0x3c, 0xff); // interrupt line: none
    s.put8(0x3d, d.physfn.empty() ? 0x01 : 0x00);
}

void writePcie(Space& s, bool rootPort) {
    s.put8(kPcieCap, 0x10);         // PCI Express
    s.put8(kPcieCap + 1, kMsixCap); // next: MSI-X
    // Version 2; device/port type 0 (endpoint) or 4 (root port, slot implemented).
    s.put16(kPcieCap + 2, rootPort ? 0x0142 : 0x0002);
    s.put32(kPcieCap + 0x04, 0x10008022u); // DevCap: MPS 512, ExtTag, RBE, FLR
    s.put16(kPcieCap + 0x08, 0x2930);      // DevCtl: MPS 256, MRRS 512, ExtTag
    s.put32(kPcieCap + 0x0c, 0x00400104u); // LnkCap: 16GT/s x16
    s.put16(kPcieCap + 0x12, 0x1104);      // LnkSta: 16GT/s x16
    s.put32(kPcieCap + 0x24, 0x0003081fu); // DevCap2: CTO, LTR, 10-bit tags
    s.put32(kPcieCap + 0x2c, 0x0000001eu); // LnkCap2: 2.5..16 GT/s
}

void writeMsix(Space& s, const DeviceSpec& d) {
    s.put8(kMsixCap, 0x11); // MSI-X
    s.put8(kMsixCap + 1, 0x00);
    const uint16_t vectors = d.physfn.empty() ? 64 : 8;
    s.put16(kMsixCap + 2, static_cast<uint16_t>((vectors - 1) | (d.driver.empty() ? 0 : 0x8000)));
    s.put32(kMsixCap + 4, 0x00002000u); // table: BAR0 + 0x2000
    s.put32(kMsixCap + 8, 0x00003000u); // PBA: BAR0 + 0x3000
}

} // namespace

std::vector<uint8_t> buildConfig(const DeviceSpec& d) {
    if (d.rawConfig) {
        return *d.rawConfig;
    }
    const size_t size = d.configSize;
    if (size != 64 && size != 256 && size != 4096) {
        throw HostgenError("device " + d.address + ": config_size " + std::to_string(size) +
                           " is not 64, 256 or 4096");
    }
    const bool isVf = !d.physfn.empty();
    const bool enabled = !d.driver.empty();
    Space s(size);
    const bool caps = size >= 256;
    writeHeader(s, d, caps);
    if (!caps) {
        return s.take();
    }
    writePcie(s, isBridge(d));
    writeMsix(s, d);

    std::vector<Ext> chain;
    if (d.acs) {
        chain.push_back({kExtAcs, 1, 8});
    }
    if (d.ats) {
        chain.push_back({kExtAts, 1, 8});
    }
    if (d.pri && !isVf) {
        chain.push_back({kExtPri, 1, 16});
    }
    if (d.pasid && !isVf) {
        chain.push_back({kExtPasid, 1, 8});
    }
    if (d.sriov && !isVf) {
        chain.push_back({kExtSriov, 1, 0x40});
    }
    if (d.siov) {
        chain.push_back({kExtDvsec, 1, 0x18});
    }
    if (chain.empty()) {
        return s.take();
    }
    if (size < 4096) {
        throw HostgenError("device " + d.address +
                           ": extended capabilities need a 4096-byte config space");
    }
    // Each capability starts on a 16-byte boundary from 0x100, chained in order.
    std::vector<uint16_t> offsets;
    uint16_t off = 0x100;
    for (const auto& e : chain) {
        offsets.push_back(off);
        off = static_cast<uint16_t>(off + ((e.size + 15) & ~15));
    }
    for (size_t i = 0; i < chain.size(); ++i) {
        const auto& e = chain[i];
        const uint16_t at = offsets[i];
        const uint16_t next = i + 1 < chain.size() ? offsets[i + 1] : 0;
        s.put32(at, uint32_t{e.id} | uint32_t{e.version} << 16 | uint32_t{next} << 20);
        switch (e.id) {
        case kExtAcs:
            s.put16(at + 4, 0x005f); // SV TB RR CR UF DT
            s.put16(at + 6, 0x001d); // SV RR CR UF enabled
            break;
        case kExtAts:
            s.put16(at + 4, 0x0020); // page aligned requests, queue depth 32
            s.put16(at + 6, enabled ? 0x8000 : 0x0000);
            break;
        case kExtPri:
            s.put16(at + 4, enabled ? 0x0001 : 0x0000);
            s.put16(at + 6, enabled ? 0x8000 : 0x8100); // PRG response PASID required
            s.put32(at + 8, 0x00000200u);               // outstanding page request capacity 512
            s.put32(at + 12, enabled ? 0x00000200u : 0);
            break;
        case kExtPasid: {
            const auto& p = *d.pasid;
            const uint16_t cap = static_cast<uint16_t>((p.exec ? 0x2 : 0) | (p.priv ? 0x4 : 0) |
                                                       ((p.width & 0x1f) << 8));
            s.put16(at + 4, cap);
            const uint16_t ctl =
                enabled ? static_cast<uint16_t>(0x1 | (p.exec ? 0x2 : 0) | (p.priv ? 0x4 : 0)) : 0;
            s.put16(at + 6, ctl);
            break;
        }
        case kExtSriov: {
            const auto& v = *d.sriov;
            s.put16(at + 0x08, v.numVfs > 0 ? 0x0009 : 0x0000); // VF Enable, VF MSE
            s.put16(at + 0x0c, v.totalVfs);                     // InitialVFs
            s.put16(at + 0x0e, v.totalVfs);                     // TotalVFs
            s.put16(at + 0x10, v.numVfs);                       // NumVFs
            s.put16(at + 0x14, v.firstVfOffset);
            s.put16(at + 0x16, v.vfStride);
            s.put16(at + 0x1a, v.vfDevice);
            s.put32(at + 0x1c, 0x00000553u); // supported page sizes
            s.put32(at + 0x20, 0x00000001u); // system page size 4K
            s.put32(at + 0x24, 0x0000000cu); // VF BAR0: 64-bit prefetchable
            break;
        }
        case kExtDvsec:
            // Intel Scalable IOV: vendor 8086, revision 0, length 0x18; DVSEC id 5.
            s.put32(at + 4, 0x8086u | 0u << 16 | uint32_t{0x18} << 20);
            s.put16(at + 8, 0x0005);
            s.put8(at + 0x0a, 0x01);         // function dependency link / flags
            s.put32(at + 0x0c, 0x00000001u); // supported page sizes
            s.put32(at + 0x10, 0x00000001u); // system page size
            s.put32(at + 0x14, 0x00000001u); // capabilities: IMS supported
            break;
        default:
            break;
        }
    }
    return s.take();
}

} // namespace svad::hostgen
