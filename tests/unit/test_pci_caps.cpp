// Unit tests of the PCI capability parser: synthetic configuration spaces,
// well-formed and broken.
#include "svad/core/pci_caps.h"

#include <algorithm>
#include <cstdint>
#include <gtest/gtest.h>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using svad::core::parsePciConfig;
using svad::core::PciCapabilities;

// A configuration space under construction.
class Cfg {
public:
    explicit Cfg(size_t size = 4096) : b_(size, 0) {
        put16(0x00, 0x8086); // vendor
        put16(0x02, 0x0b25); // device
    }

    Cfg& put8(size_t off, uint8_t v) {
        b_.at(off) = v;
        return *this;
    }
    Cfg& put16(size_t off, uint16_t v) {
        put8(off, v & 0xff);
        return put8(off + 1, v >> 8);
    }
    Cfg& put32(size_t off, uint32_t v) {
        put16(off, v & 0xffff);
        return put16(off + 2, v >> 16);
    }

    // Sets Status.CapList and the capability pointer.
    Cfg& capList(uint8_t first, size_t ptrReg = 0x34) {
        put16(0x06, 0x0010);
        return put8(ptrReg, first);
    }
    Cfg& stdCap(size_t off, uint8_t id, uint8_t next) {
        put8(off, id);
        return put8(off + 1, next);
    }
    // Extended capability header: id 15:0, version 19:16, next 31:20.
    Cfg& extCap(size_t off, uint16_t id, uint16_t next, uint8_t version = 1) {
        return put32(off, uint32_t{id} | (uint32_t{version} & 0xf) << 16 | uint32_t{next} << 20);
    }
    // A PCI Express device: the Express capability at 0x40.
    Cfg& express() {
        capList(0x40);
        return stdCap(0x40, 0x10, 0x00);
    }

    PciCapabilities parse() const { return parsePciConfig(b_); }
    std::vector<uint8_t>& bytes() { return b_; }

private:
    std::vector<uint8_t> b_;
};

bool hasWarning(const PciCapabilities& c, const std::string& needle) {
    return std::any_of(c.warnings.begin(), c.warnings.end(),
                       [&](const std::string& w) { return w.find(needle) != std::string::npos; });
}

std::string allWarnings(const PciCapabilities& c) {
    std::string s;
    for (const auto& w : c.warnings) {
        s += w + "\n";
    }
    return s;
}

std::vector<uint16_t> extOffsets(const PciCapabilities& c) {
    std::vector<uint16_t> v;
    for (const auto& e : c.extended) {
        v.push_back(e.offset);
    }
    return v;
}

// ---- standard list ------------------------------------------------------------

TEST(PciCapsStandard, EmptyInputWarnsAndFindsNothing) {
    const auto c = parsePciConfig({});
    EXPECT_TRUE(c.standard.empty());
    EXPECT_TRUE(c.extended.empty());
    EXPECT_FALSE(c.express);
    EXPECT_FALSE(c.warnings.empty());
}

TEST(PciCapsStandard, NoCapabilitiesListBitMeansNoWalk) {
    Cfg cfg(256);
    cfg.put8(0x34, 0x40).stdCap(0x40, 0x10, 0); // pointer set, Status bit clear
    const auto c = cfg.parse();
    EXPECT_TRUE(c.standard.empty());
    EXPECT_FALSE(c.express);
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsStandard, WalksInOrderAndFindsExpress) {
    Cfg cfg(256);
    cfg.capList(0x50).stdCap(0x50, 0x01, 0x70).stdCap(0x70, 0x10, 0xac).stdCap(0xac, 0x05, 0x00);
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01, 0x10, 0x05}));
    EXPECT_TRUE(c.express);
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsStandard, PointerLowBitsAreMasked) {
    Cfg cfg(256);
    cfg.capList(0x43).stdCap(0x40, 0x01, 0x53).stdCap(0x50, 0x05, 0x02); // 0x02 & ~3 == 0
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01, 0x05}));
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsStandard, CardBusBridgeUsesPointerAt0x14) {
    Cfg cfg(256);
    cfg.put8(0x0e, 0x82); // multi-function, header type 2
    cfg.capList(0x80, 0x14).stdCap(0x80, 0x01, 0x00);
    cfg.put8(0x34, 0x90).stdCap(0x90, 0x05, 0x00); // must be ignored
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01}));
}

TEST(PciCapsStandard, LoopEndsWalkWithWarning) {
    Cfg cfg(256);
    cfg.capList(0x40).stdCap(0x40, 0x01, 0x50).stdCap(0x50, 0x05, 0x40);
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01, 0x05}));
    EXPECT_TRUE(hasWarning(c, "loops back to 0x40")) << allWarnings(c);
}

TEST(PciCapsStandard, PointerIntoHeaderEndsWalkWithWarning) {
    Cfg cfg(256);
    cfg.capList(0x40).stdCap(0x40, 0x01, 0x20);
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01}));
    EXPECT_TRUE(hasWarning(c, "0x20")) << allWarnings(c);
}

TEST(PciCapsStandard, FirstPointerIntoHeaderWarns) {
    Cfg cfg(256);
    cfg.capList(0x3c);
    const auto c = cfg.parse();
    EXPECT_TRUE(c.standard.empty());
    EXPECT_TRUE(hasWarning(c, "0x3c")) << allWarnings(c);
}

TEST(PciCapsStandard, IdFFIsABrokenChain) {
    Cfg cfg(256);
    cfg.capList(0x40).stdCap(0x40, 0x01, 0x50).stdCap(0x50, 0xff, 0x60).stdCap(0x60, 0x05, 0);
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard, (std::vector<uint8_t>{0x01}));
    EXPECT_TRUE(hasWarning(c, "0x50")) << allWarnings(c);
}

TEST(PciCapsStandard, LongestPossibleListIsAccepted) {
    // 48 capabilities, one in every dword from 0x40 to 0xfc.
    Cfg cfg(256);
    cfg.capList(0x40);
    for (size_t off = 0x40; off < 0x100; off += 4) {
        cfg.stdCap(off, 0x09, off + 4 < 0x100 ? static_cast<uint8_t>(off + 4) : 0);
    }
    const auto c = cfg.parse();
    EXPECT_EQ(c.standard.size(), 48u);
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsStandard, Truncated64BytesWarns) {
    Cfg cfg(64);
    cfg.capList(0x40);
    const auto c = cfg.parse();
    EXPECT_TRUE(c.standard.empty());
    EXPECT_TRUE(
        hasWarning(c, "config space truncated to 64 bytes: extended capabilities not readable"))
        << allWarnings(c);
}

TEST(PciCapsStandard, TruncatedExpressDeviceWarnsAboutExtendedSpace) {
    Cfg cfg(128);
    cfg.express();
    const auto c = cfg.parse();
    EXPECT_TRUE(c.express);
    EXPECT_TRUE(
        hasWarning(c, "config space truncated to 128 bytes: extended capabilities not readable"))
        << allWarnings(c);
}

TEST(PciCapsStandard, ConventionalDeviceIn64BytesWithoutCapsIsQuiet) {
    Cfg cfg(64); // Status.CapList clear: nothing is missing
    EXPECT_TRUE(cfg.parse().warnings.empty());
}

TEST(PciCapsStandard, ShortHeaderWarns) {
    Cfg cfg(16);
    const auto c = cfg.parse();
    EXPECT_TRUE(hasWarning(c, "truncated to 16 bytes")) << allWarnings(c);
}

// ---- extended list: well-formed ---------------------------------------------------

TEST(PciCapsExtended, ConventionalSizeExpressDeviceHasNoExtendedAndNoWarning) {
    Cfg cfg(256);
    cfg.express();
    const auto c = cfg.parse();
    EXPECT_TRUE(c.express);
    EXPECT_TRUE(c.extended.empty());
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsExtended, EmptyHeadersMeanNoExtendedCapabilities) {
    for (uint32_t header : {0u, 0xffffffffu}) {
        Cfg cfg;
        cfg.express().put32(0x100, header);
        const auto c = cfg.parse();
        EXPECT_TRUE(c.extended.empty()) << header;
        EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
    }
}

TEST(PciCapsExtended, DecodesSvaCapabilities) {
    Cfg cfg;
    cfg.express();
    // AER, ATS, PASID, PRI, ACS, SR-IOV, DVSEC (Intel Scalable IOV).
    cfg.extCap(0x100, 0x0001, 0x220, 2);
    cfg.extCap(0x220, 0x000f, 0x230).put16(0x224, 0x0020 | 0x0a).put16(0x226, 0x8000 | 0x03);
    cfg.extCap(0x230, 0x001b, 0x240).put16(0x234, 0x1400 | 0x04); // Priv+, Exec-, width 20
    cfg.extCap(0x240, 0x0013, 0x260).put16(0x244, 0x0001).put32(0x248, 0x00000200);
    cfg.extCap(0x260, 0x000d, 0x270).put16(0x264, 0x005f).put16(0x266, 0x001d);
    cfg.extCap(0x270, 0x0010, 0x2b0);
    cfg.put16(0x27c, 8).put16(0x27e, 64).put16(0x280, 4);
    cfg.put16(0x284, 0x80).put16(0x286, 2).put16(0x28a, 0x0b26);
    cfg.extCap(0x2b0, 0x0023, 0x000).put32(0x2b4, 0x0180'0000 | 0x1'0000 | 0x8086);
    cfg.put16(0x2b8, 5);
    const auto c = cfg.parse();

    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
    EXPECT_EQ(extOffsets(c),
              (std::vector<uint16_t>{0x100, 0x220, 0x230, 0x240, 0x260, 0x270, 0x2b0}));
    ASSERT_EQ(c.extended.size(), 7u);
    EXPECT_EQ(c.extended[0].id, 0x0001);
    EXPECT_EQ(c.extended[0].version, 2);
    EXPECT_EQ(c.extended[6].id, 0x0023);

    EXPECT_TRUE(c.ats.present);
    EXPECT_EQ(c.ats.offset, 0x220);
    EXPECT_EQ(c.ats.invalidateQueueDepth, 0x0au);
    EXPECT_TRUE(c.ats.pageAligned);
    EXPECT_TRUE(c.ats.enabled);
    EXPECT_EQ(c.ats.smallestTranslationUnit, 3u);

    EXPECT_TRUE(c.pasid.present);
    EXPECT_EQ(c.pasid.offset, 0x230);
    EXPECT_FALSE(c.pasid.exec);
    EXPECT_TRUE(c.pasid.priv);
    EXPECT_EQ(c.pasid.maxWidth, 20u);

    EXPECT_TRUE(c.pri.present);
    EXPECT_EQ(c.pri.offset, 0x240);
    EXPECT_TRUE(c.pri.enabled);
    EXPECT_EQ(c.pri.outstandingCapacity, 0x200u);

    EXPECT_TRUE(c.acs.present);
    EXPECT_EQ(c.acs.offset, 0x260);
    EXPECT_EQ(c.acs.capability, 0x005f);
    EXPECT_EQ(c.acs.control, 0x001d);

    EXPECT_TRUE(c.sriov.present);
    EXPECT_EQ(c.sriov.offset, 0x270);
    EXPECT_EQ(c.sriov.initialVfs, 8);
    EXPECT_EQ(c.sriov.totalVfs, 64);
    EXPECT_EQ(c.sriov.numVfs, 4);
    EXPECT_EQ(c.sriov.firstVfOffset, 0x80);
    EXPECT_EQ(c.sriov.vfStride, 2);
    EXPECT_EQ(c.sriov.vfDeviceId, 0x0b26);

    ASSERT_EQ(c.dvsecs.size(), 1u);
    EXPECT_EQ(c.dvsecs[0].offset, 0x2b0);
    EXPECT_EQ(c.dvsecs[0].vendor, 0x8086);
    EXPECT_EQ(c.dvsecs[0].id, 5);
    EXPECT_EQ(c.dvsecs[0].revision, 1);
    EXPECT_TRUE(c.siov);
}

TEST(PciCapsExtended, PasidFlagBitsAndWidth) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x001b, 0).put16(0x104, 0x0f00 | 0x02); // Exec+, width 15
    const auto c = cfg.parse();
    EXPECT_TRUE(c.pasid.present);
    EXPECT_TRUE(c.pasid.exec);
    EXPECT_FALSE(c.pasid.priv);
    EXPECT_EQ(c.pasid.maxWidth, 15u);
}

TEST(PciCapsExtended, AbsentCapabilitiesStayAbsent) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0);
    const auto c = cfg.parse();
    EXPECT_FALSE(c.pasid.present);
    EXPECT_FALSE(c.ats.present);
    EXPECT_FALSE(c.pri.present);
    EXPECT_FALSE(c.acs.present);
    EXPECT_FALSE(c.sriov.present);
    EXPECT_FALSE(c.siov);
    EXPECT_TRUE(c.dvsecs.empty());
}

TEST(PciCapsExtended, OtherDvsecsAreNotScalableIov) {
    Cfg cfg;
    cfg.express();
    cfg.extCap(0x100, 0x0023, 0x140).put32(0x104, 0x8086).put16(0x108, 0x0000); // Intel id 0
    cfg.extCap(0x140, 0x0023, 0x000).put32(0x144, 0x1e98).put16(0x148, 0x0005); // CXL id 5
    const auto c = cfg.parse();
    ASSERT_EQ(c.dvsecs.size(), 2u);
    EXPECT_EQ(c.dvsecs[1].vendor, 0x1e98);
    EXPECT_EQ(c.dvsecs[1].id, 5);
    EXPECT_FALSE(c.siov);
}

TEST(PciCapsExtended, BackwardPointersAreFollowed) {
    // Real switches order their capabilities this way (see the cap-multicast
    // dump); lspci and the kernel follow them, only revisits are loops.
    Cfg cfg;
    cfg.express();
    cfg.extCap(0x100, 0x0003, 0xfb4).extCap(0xfb4, 0x0001, 0x138).extCap(0x138, 0x000d, 0);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100, 0xfb4, 0x138}));
    EXPECT_TRUE(c.acs.present);
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

TEST(PciCapsExtended, ExtendedListWalkedWithoutExpressCapability) {
    // The kernel only exposes > 256 bytes when it found extended space usable.
    Cfg cfg;
    cfg.extCap(0x100, 0x001b, 0);
    const auto c = cfg.parse();
    EXPECT_FALSE(c.express);
    EXPECT_TRUE(c.pasid.present);
}

TEST(PciCapsExtended, LongestPossibleChainIsAccepted) {
    Cfg cfg;
    cfg.express();
    for (size_t off = 0x100; off < 0x1000; off += 4) {
        cfg.extCap(off, 0x000b, off + 4 < 0x1000 ? static_cast<uint16_t>(off + 4) : 0);
    }
    const auto c = cfg.parse();
    EXPECT_EQ(c.extended.size(), (4096u - 256u) / 4u);
    EXPECT_TRUE(c.warnings.empty()) << allWarnings(c);
}

// ---- extended list: broken --------------------------------------------------------

TEST(PciCapsExtended, LoopEndsWalkWithWarningNamingOffset) {
    Cfg cfg;
    cfg.express();
    cfg.extCap(0x100, 0x001b, 0x200).extCap(0x200, 0x000f, 0x300).extCap(0x300, 0x0013, 0x100);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100, 0x200, 0x300}));
    EXPECT_TRUE(c.pasid.present && c.ats.present && c.pri.present);
    EXPECT_TRUE(hasWarning(c, "loops back to 0x100")) << allWarnings(c);
}

TEST(PciCapsExtended, SelfLoop) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0x140).extCap(0x140, 0x0002, 0x140);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100, 0x140}));
    EXPECT_TRUE(hasWarning(c, "loops back to 0x140")) << allWarnings(c);
}

TEST(PciCapsExtended, MisalignedPointerEndsWalk) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0x141).extCap(0x140, 0x001b, 0);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100}));
    EXPECT_FALSE(c.pasid.present);
    EXPECT_TRUE(hasWarning(c, "misaligned next pointer 0x141")) << allWarnings(c);
}

TEST(PciCapsExtended, PointerBelow0x100EndsWalk) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0x0c0);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100}));
    EXPECT_TRUE(hasWarning(c, "0x0c0")) << allWarnings(c);
}

TEST(PciCapsExtended, PointerPastBufferEndEndsWalk) {
    Cfg cfg(0x200);
    cfg.express().extCap(0x100, 0x0001, 0x300);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100}));
    EXPECT_TRUE(hasWarning(c, "0x300")) << allWarnings(c);
}

TEST(PciCapsExtended, PointerToEmptyHeaderEndsWalk) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0x400);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100}));
    EXPECT_TRUE(hasWarning(c, "0x400")) << allWarnings(c);
}

TEST(PciCapsExtended, CapabilityRunningPastTheEndIsNotDecoded) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0001, 0xffc).extCap(0xffc, 0x001b, 0);
    const auto c = cfg.parse();
    EXPECT_EQ(extOffsets(c), (std::vector<uint16_t>{0x100, 0xffc}));
    EXPECT_FALSE(c.pasid.present);
    EXPECT_TRUE(hasWarning(c, "at 0xffc runs past the end")) << allWarnings(c);
}

TEST(PciCapsExtended, SriovRunningPastTheEndIsNotDecoded) {
    Cfg cfg;
    cfg.express().extCap(0x100, 0x0010, 0).put16(0x10e, 64);
    cfg.bytes().resize(0x120);
    const auto c = cfg.parse();
    EXPECT_FALSE(c.sriov.present);
    EXPECT_TRUE(hasWarning(c, "at 0x100 runs past the end")) << allWarnings(c);
}

TEST(PciCapsExtended, HeaderCutByBufferEnd) {
    Cfg cfg(0x102); // not even a whole header at 0x100
    cfg.express();
    cfg.put16(0x100, 0x0001);
    const auto c = cfg.parse();
    EXPECT_TRUE(c.extended.empty());
}

TEST(PciCapsExtended, DuplicatePasidKeepsFirst) {
    Cfg cfg;
    cfg.express();
    cfg.extCap(0x100, 0x001b, 0x200).put16(0x104, 0x1400);
    cfg.extCap(0x200, 0x001b, 0).put16(0x204, 0x0800);
    const auto c = cfg.parse();
    EXPECT_EQ(c.pasid.offset, 0x100);
    EXPECT_EQ(c.pasid.maxWidth, 20u);
    EXPECT_TRUE(hasWarning(c, "second PASID capability at 0x200")) << allWarnings(c);
}

TEST(PciCapsExtended, AliasedExtendedSpaceIsIgnored) {
    // A device that does not decode extended config cycles repeats its first
    // 256 bytes (the broken-ecaps dump); 0x100 then "holds" id = vendor id.
    Cfg cfg;
    cfg.put16(0x00, 0x1002).put16(0x02, 0x7911).put16(0x06, 0x0220);
    auto& b = cfg.bytes();
    for (size_t off = 0x100; off < 0x1000; ++off) {
        b[off] = b[off % 0x100];
    }
    const auto c = cfg.parse();
    EXPECT_TRUE(c.extended.empty());
    EXPECT_TRUE(hasWarning(c, "mirrors the standard header")) << allWarnings(c);
}

// ---- robustness ----------------------------------------------------------------------

TEST(PciCapsRobustness, RandomInputNeverEscapesTheBuffer) {
    std::mt19937 rng(12345);
    for (int round = 0; round < 3000; ++round) {
        const size_t sizes[] = {0, 7, 63, 64, 100, 255, 256, 259, 260, 1000, 4096};
        const size_t size = sizes[round % std::size(sizes)];
        std::vector<uint8_t> buf(size);
        for (auto& x : buf) {
            x = static_cast<uint8_t>(rng());
        }
        if (size >= 0x40 && round % 2 == 0) {
            buf[0x06] |= 0x10;
        }
        // Sprinkle plausible extended headers so that long chains happen.
        for (size_t off = 0x100; off + 4 <= size && round % 3 == 0; off += 4) {
            const uint32_t next = 0x100 + (rng() % 0xf00 & ~3u);
            const uint32_t h = (rng() % 0x30) | (1u << 16) | next << 20;
            buf[off] = h & 0xff;
            buf[off + 1] = (h >> 8) & 0xff;
            buf[off + 2] = (h >> 16) & 0xff;
            buf[off + 3] = h >> 24;
        }
        const auto c = parsePciConfig(buf);
        ASSERT_LE(c.standard.size(), 48u);
        ASSERT_LE(c.extended.size(), 960u);
        std::set<uint16_t> offsets;
        for (const auto& e : c.extended) {
            ASSERT_LE(e.offset + 4u, size);
            ASSERT_EQ(e.offset % 4, 0);
            ASSERT_TRUE(offsets.insert(e.offset).second) << "revisited " << e.offset;
        }
    }
}

} // namespace
