// Synthetic hosts: a deterministic mix of SVA-relevant devices of a given size.
#include "svad/hostgen/hostgen.h"
#include "svad/hostgen/internal.h"

#include <algorithm>

namespace svad::hostgen {

namespace {

// Sapphire Rapids-class VT-d registers (see config/hosts/sample-spr.yaml):
// CAP: MGAW 57, SAGAW 4/5-level, FL1GP, FL5LP, PI. ECAP: SMTS, PASID (PSS 19),
// NEST, PRS, FLTS, SLTS, DT, QI, IR, EIM, PT, SC.
constexpr uint64_t kVtdCap = 0x19ed008c40780c66ULL;
constexpr uint64_t kVtdEcap = 0x0003ef9a24f050dfULL;

// splitmix64: small, fast and the same everywhere (std distributions are not).
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    uint32_t below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(next() % n); }
    uint32_t range(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }
    bool chance(uint32_t percent) { return below(100) < percent; }

private:
    uint64_t s_;
};

enum class Kind { Dsa, Iaa, SriovNic, Gpu, GpuWithAudio, Nvme, PlainNic, DualPortNic };

class Synth {
public:
    Synth(uint32_t functions, uint64_t seed) : remaining_(functions), rng_(seed) {}

    HostSpec run() {
        host_.name = "synthetic-" + std::to_string(remaining_) + "-" + std::to_string(rng_.next());
        const uint32_t nUnits = std::clamp<uint32_t>(remaining_ / 512 + 2, 2, 16);
        for (uint32_t u = 0; u < nUnits; ++u) {
            host_.units.push_back(UnitSpec{"dmar" + std::to_string(u), kVtdCap, kVtdEcap, "6:0"});
        }
        units_ = nUnits;
        if (remaining_ == 0) {
            return host_;
        }
        hostBridge();
        while (remaining_ > 0) {
            cluster();
        }
        if (host_.devices.size() >= 16) {
            host_.softwareVdpa.push_back(VdpaSpec{"vdpasim0", "vhost_vdpa", "vdpasim_net"});
        }
        return host_;
    }

private:
    // The next bus of the next cluster; several domains once 0x01..0xfe are used.
    detail::PciAddr nextBus() {
        if (bus_ > 0xfe) {
            ++domain_;
            bus_ = 0x01;
        }
        detail::PciAddr a{domain_, static_cast<uint8_t>(bus_), 0, 0};
        ++bus_;
        ++busesUsed_;
        return a;
    }

    std::string unitFor() const { return "dmar" + std::to_string((busesUsed_ / 8) % units_); }
    int32_t numaFor() const {
        return static_cast<int32_t>(((busesUsed_ / 8) % units_) * 2 / units_);
    }

    uint32_t newGroup(const char* type) {
        GroupSpec g;
        g.id = nextGroup_++;
        g.type = type;
        g.reservedRegions.push_back(detail::kMsiRegion);
        host_.groups.push_back(std::move(g));
        return host_.groups.back().id;
    }

    DeviceSpec base(const detail::PciAddr& a, uint16_t vendor, uint16_t device, uint32_t cls) {
        DeviceSpec d;
        d.address = detail::formatAddress(a);
        d.vendor = vendor;
        d.device = device;
        d.subsystemVendor = vendor;
        d.subsystemDevice = static_cast<uint16_t>(rng_.below(0x10000));
        d.classCode = cls;
        d.revision = static_cast<uint8_t>(rng_.range(1, 8));
        d.numaNode = numaFor();
        d.iommu = unitFor();
        return d;
    }

    void add(DeviceSpec d) {
        --remaining_;
        host_.devices.push_back(std::move(d));
    }

    void bindVfio(DeviceSpec& d) {
        d.driver = "vfio-pci";
        d.driverOverride = "vfio-pci";
        d.vfio = nextVfio_++;
    }

    void hostBridge() {
        DeviceSpec d = base(detail::PciAddr{}, 0x8086, 0x09a2, 0x088000);
        d.iommu = "dmar0";
        d.group = newGroup("DMA-FQ");
        d.configSize = 256;
        add(std::move(d));
        bus_ = 0x01;
    }

    void cluster() {
        Kind k;
        const uint32_t r = rng_.below(100);
        if (r < 12) {
            k = Kind::Dsa;
        } else if (r < 20) {
            k = Kind::Iaa;
        } else if (r < 50) {
            k = Kind::SriovNic;
        } else if (r < 58) {
            k = Kind::Gpu;
        } else if (r < 64) {
            k = Kind::GpuWithAudio;
        } else if (r < 82) {
            k = Kind::Nvme;
        } else if (r < 92) {
            k = Kind::PlainNic;
        } else {
            k = Kind::DualPortNic;
        }
        if (remaining_ < 2 && (k == Kind::GpuWithAudio || k == Kind::DualPortNic)) {
            k = Kind::Nvme;
        }
        switch (k) {
        case Kind::Dsa:
        case Kind::Iaa:
            accelerator(k == Kind::Dsa);
            break;
        case Kind::SriovNic:
            sriovNic();
            break;
        case Kind::Gpu:
            gpu(false);
            break;
        case Kind::GpuWithAudio:
            gpu(true);
            break;
        case Kind::Nvme:
            nvme();
            break;
        case Kind::PlainNic:
            plainNic();
            break;
        case Kind::DualPortNic:
            dualPortNic();
            break;
        }
    }

    void accelerator(bool dsa) {
        const auto a = nextBus();
        DeviceSpec d = base(a, 0x8086, dsa ? 0x0b25 : 0x0cfe, 0x088000);
        d.subsystemDevice = 0;
        d.driver = "idxd";
        d.pasid = PasidSpec{20, false, true};
        d.ats = true;
        d.pri = true;
        d.siov = true;
        d.group = newGroup("DMA");
        const uint32_t k = nextIdxd_++;
        d.idxdName = (dsa ? "dsa" : "iax") + std::to_string(k);
        const uint32_t nq = dsa ? 4 : rng_.range(2, 4);
        for (uint32_t q = 0; q < nq; ++q) {
            QueueSpec w;
            w.name = "wq" + std::to_string(k) + "." + std::to_string(q);
            w.mode = q % 2 == 0 ? "dedicated" : "shared";
            w.type = q < 2 || !dsa ? "user" : "kernel";
            w.size = w.mode == "shared" ? 32 : 16;
            w.groupId = static_cast<int32_t>(q / 2);
            w.threshold = w.mode == "shared" ? w.size : 0;
            w.wqName = w.type == "user" ? "app" + std::to_string(q) : "dmaengine";
            if (q == 3 && rng_.chance(25)) {
                w.state = "disabled";
            }
            w.charDevice = w.type == "user" && w.state == "enabled";
            d.queues.push_back(std::move(w));
        }
        add(std::move(d));
    }

    // One PF with VFs (or none if the budget is spent). `fn`/`offset` place
    // the second port of a dual-port card.
    void sriovPf(const detail::PciAddr& a, bool mellanox, uint32_t maxVfs, uint16_t offset) {
        DeviceSpec d =
            mellanox ? base(a, 0x15b3, 0x101d, 0x020000) : base(a, 0x8086, 0x1592, 0x020000);
        d.driver = mellanox ? "mlx5_core" : "ice";
        d.acs = true;
        d.ats = mellanox;
        d.group = newGroup("DMA-FQ");
        const uint32_t budget = remaining_ - 1;
        const uint16_t numVfs = static_cast<uint16_t>(std::min(maxVfs, budget));
        SriovSpec s;
        s.totalVfs = static_cast<uint16_t>(std::max<uint32_t>(numVfs, maxVfs));
        s.numVfs = numVfs;
        s.vfDevice = mellanox ? 0x101e : 0x1889;
        s.vfDriver = mellanox ? "mlx5_core" : "iavf";
        s.firstVfOffset = offset;
        s.vfStride = 1;
        for (uint16_t i = 0; i < numVfs; ++i) {
            const uint32_t roll = rng_.below(100);
            if (roll < 20) {
                VfSpec v;
                v.index = i;
                v.driver = "vfio-pci";
                v.driverOverride = "vfio-pci";
                v.vfio = nextVfio_++;
                s.vfs.push_back(std::move(v));
            } else if (mellanox && roll < 40) {
                VfSpec v;
                v.index = i;
                v.vdpa.push_back(VdpaSpec{"vdpa" + std::to_string(nextVdpa_++),
                                          rng_.chance(80) ? "vhost_vdpa" : "virtio_vdpa", ""});
                s.vfs.push_back(std::move(v));
            }
        }
        d.sriov = std::move(s);
        add(std::move(d));
        remaining_ -= numVfs;
    }

    void sriovNic() {
        const auto a = nextBus();
        const bool mellanox = rng_.chance(50);
        const uint32_t want = rng_.range(2, 16);
        if (rng_.chance(30) && remaining_ >= 4) {
            // Two ports, each with its own VFs, VF ranges one after the other.
            const uint32_t v0 = std::min(want, (remaining_ - 2) / 2);
            sriovPf(a, mellanox, v0, 0x80);
            auto b = a;
            b.fn = 1;
            const uint32_t v1 = std::min(want, remaining_ - 1);
            sriovPf(b, mellanox, v1, static_cast<uint16_t>(0x80 + std::max<uint32_t>(v0, 1) - 1));
            return;
        }
        sriovPf(a, mellanox, want, 0x80);
    }

    void gpu(bool withAudio) {
        const auto a = nextBus();
        DeviceSpec d =
            withAudio ? base(a, 0x1002, 0x73bf, 0x030000) : base(a, 0x8086, 0x56c0, 0x038000);
        d.ats = true;
        d.pri = true;
        d.pasid = PasidSpec{withAudio ? 16u : 20u, false, false};
        const uint32_t g = newGroup("DMA-FQ");
        d.group = g;
        const bool vfio = rng_.chance(30);
        if (vfio) {
            bindVfio(d);
        } else {
            d.driver = withAudio ? "amdgpu" : "i915";
        }
        add(std::move(d));
        if (withAudio) {
            auto b = a;
            b.fn = 1;
            DeviceSpec au = base(b, 0x1002, 0xab28, 0x040300);
            au.group = g; // no ACS between the functions: one group
            if (vfio) {
                bindVfio(au);
            } else {
                au.driver = "snd_hda_intel";
            }
            add(std::move(au));
        }
    }

    void nvme() {
        const auto a = nextBus();
        DeviceSpec d = base(a, 0x144d, 0xa80a, 0x010802);
        d.subsystemDevice = 0xa801;
        d.group = newGroup("DMA-FQ");
        if (rng_.chance(25)) {
            bindVfio(d);
        } else {
            d.driver = "nvme";
        }
        add(std::move(d));
    }

    void plainNic() {
        const auto a = nextBus();
        DeviceSpec d = base(a, 0x8086, 0x1533, 0x020000);
        d.driver = "igb";
        d.configSize = 4096;
        d.group = newGroup("DMA-FQ");
        add(std::move(d));
    }

    // A two-port card without ACS: both functions in one group. Sometimes one
    // port is handed to vfio-pci and the other stays with i40e: not viable.
    void dualPortNic() {
        const auto a = nextBus();
        const uint32_t g = newGroup("DMA-FQ");
        const uint32_t mode = rng_.below(3); // 0 host, 1 both vfio, 2 split
        for (uint8_t fn = 0; fn < 2; ++fn) {
            auto b = a;
            b.fn = fn;
            DeviceSpec d = base(b, 0x8086, 0x1572, 0x020000);
            d.group = g;
            if (mode == 1 || (mode == 2 && fn == 0)) {
                bindVfio(d);
            } else {
                d.driver = "i40e";
            }
            add(std::move(d));
        }
    }

    uint32_t remaining_;
    Rng rng_;
    HostSpec host_;
    uint32_t units_ = 2;
    uint16_t domain_ = 0;
    uint32_t bus_ = 0;
    uint32_t busesUsed_ = 0;
    uint32_t nextGroup_ = 0;
    uint32_t nextVfio_ = 0;
    uint32_t nextIdxd_ = 0;
    uint32_t nextVdpa_ = 0;
};

} // namespace

HostSpec synthesize(uint32_t functions, uint64_t seed) {
    return Synth(functions, seed).run();
}

} // namespace svad::hostgen
