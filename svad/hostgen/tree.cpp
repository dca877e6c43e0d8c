// Writing the sysfs-like tree (layout in hostgen.h). Every file is made with
// openat/mkdirat/symlinkat relative to an open directory, so a host of
// thousands of functions costs a few syscalls per file and no path walks.
#include "svad/hostgen/hostgen.h"
#include "svad/hostgen/internal.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace svad::hostgen {

namespace {

constexpr unsigned kVfioMajor = 511;      // vfio-dev cdevs (dynamic major)
constexpr unsigned kVhostVdpaMajor = 510; // vhost-vdpa (dynamic major)

// A directory to write into: either one it holds open (closed on destruction),
// or a subdirectory addressed through an open ancestor ("BDF/" + name), which
// saves an open/close pair for each of the thousands of leaf directories.
class Dir {
public:
    Dir() = default;
    Dir(int fd, std::string path) : fd_(fd), owned_(true), path_(std::move(path)) {}
    Dir(const Dir&) = delete;
    Dir& operator=(const Dir&) = delete;
    Dir(Dir&& o) noexcept
        : fd_(o.fd_), owned_(o.owned_), prefix_(std::move(o.prefix_)), path_(std::move(o.path_)) {
        o.fd_ = -1;
        o.owned_ = false;
    }
    Dir& operator=(Dir&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.fd_;
            owned_ = o.owned_;
            prefix_ = std::move(o.prefix_);
            path_ = std::move(o.path_);
            o.fd_ = -1;
            o.owned_ = false;
        }
        return *this;
    }
    ~Dir() { reset(); }

    bool valid() const { return fd_ >= 0; }

    [[noreturn]] void fail(const std::string& name, const char* op) const {
        const int err = errno;
        throw HostgenError("cannot " + std::string(op) + " " + path_ + "/" + name + ": " +
                           std::strerror(err));
    }

    // Makes the subdirectory `name` and opens it (for directories written to often).
    Dir mkdir(const std::string& name) const {
        make(name);
        const std::string rel = prefix_ + name;
        int fd = ::openat(fd_, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            fail(name, "open directory");
        }
        return Dir(fd, path_ + "/" + name);
    }

    // Makes the subdirectory `name`, addressed through this one's descriptor.
    // The result must not outlive this Dir.
    Dir mkdirAt(const std::string& name) const {
        make(name);
        Dir d;
        d.fd_ = fd_;
        d.owned_ = false;
        d.prefix_ = prefix_ + name + "/";
        d.path_ = path_ + "/" + name;
        return d;
    }

    void file(const std::string& name, const void* data, size_t len) const {
        const std::string rel = prefix_ + name;
        int fd = ::openat(fd_, rel.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            fail(name, "create");
        }
        const auto* p = static_cast<const char*>(data);
        while (len > 0) {
            ssize_t n = ::write(fd, p, len);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                ::close(fd);
                fail(name, "write");
            }
            p += n;
            len -= static_cast<size_t>(n);
        }
        ::close(fd);
    }
    void file(const std::string& name, const std::string& text) const {
        file(name, text.data(), text.size());
    }

    void link(const std::string& target, const std::string& name) const {
        const std::string rel = prefix_ + name;
        if (::symlinkat(target.c_str(), fd_, rel.c_str()) != 0) {
            fail(name, "create link");
        }
    }

private:
    void make(const std::string& name) const {
        const std::string rel = prefix_ + name;
        if (::mkdirat(fd_, rel.c_str(), 0755) != 0) {
            fail(name, "create directory");
        }
    }
    void reset() {
        if (owned_ && fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = -1;
        owned_ = false;
    }
    int fd_ = -1;
    bool owned_ = false;
    std::string prefix_; // relative to fd_, ends in '/' when not empty
    std::string path_;   // for messages
};

std::string hex(uint32_t v, int digits) {
    static const char* d = "0123456789abcdef";
    std::string s = "0x";
    for (int i = digits - 1; i >= 0; --i) {
        s += d[(v >> (4 * i)) & 15];
    }
    s += '\n';
    return s;
}

std::string hex64(uint64_t v) {
    char buf[32];
    (void)std::snprintf(buf, sizeof buf, "%llx\n", static_cast<unsigned long long>(v));
    return buf;
}

std::string line(const std::string& s) {
    return s + "\n";
}
std::string line(long long v) {
    return std::to_string(v) + "\n";
}

// The resource file: 13 "start end flags" lines, BAR0 from the config space.
std::string resourceText(const std::vector<uint8_t>& cfg) {
    uint64_t bar = 0;
    if (cfg.size() >= 0x18) {
        uint32_t lo = cfg[0x10] | cfg[0x11] << 8 | cfg[0x12] << 16 | uint32_t{cfg[0x13]} << 24;
        uint32_t hi = cfg[0x14] | cfg[0x15] << 8 | cfg[0x16] << 16 | uint32_t{cfg[0x17]} << 24;
        if ((lo & 0x7) == 0x4) {
            bar = (uint64_t{hi} << 32 | lo) & ~uint64_t{0xf};
        }
    }
    std::string out;
    char buf[80];
    for (int i = 0; i < 13; ++i) {
        if (i == 0 && bar != 0) {
            (void)std::snprintf(buf, sizeof buf, "0x%016llx 0x%016llx 0x%016llx\n",
                                static_cast<unsigned long long>(bar),
                                static_cast<unsigned long long>(bar) + 0xffff, 0x14220cULL);
        } else {
            (void)std::snprintf(buf, sizeof buf, "0x%016llx 0x%016llx 0x%016llx\n", 0ULL, 0ULL,
                                0ULL);
        }
        out += buf;
    }
    return out;
}

// A PCI function's uevent file, as the kernel's pci_uevent() writes it.
std::string pciUevent(const DeviceSpec& d) {
    char ids[64];
    (void)std::snprintf(ids, sizeof ids, "PCI_ID=%04X:%04X\nPCI_SUBSYS_ID=%04X:%04X\n", d.vendor,
                        d.device, d.subsystemVendor, d.subsystemDevice);
    char cls[32];
    (void)std::snprintf(cls, sizeof cls, "PCI_CLASS=%X\n", d.classCode);
    std::string out = d.driver.empty() ? "" : "DRIVER=" + d.driver + "\n";
    return out + cls + ids + "PCI_SLOT_NAME=" + d.address + "\n";
}

class TreeWriter {
public:
    TreeWriter(const HostSpec& host, Dir root) : host_(host), root_(std::move(root)) {}

    void run() {
        sys_ = root_.mkdir("sys");
        dev_ = root_.mkdir("dev");
        devices_ = sys_.mkdir("devices");
        Dir virt = devices_.mkdir("virtual");
        Dir iommu = virt.mkdir("iommu");
        Dir cls = sys_.mkdir("class");
        Dir classIommu = cls.mkdir("iommu");
        Dir kernel = sys_.mkdir("kernel");
        groupsDir_ = kernel.mkdir("iommu_groups");
        bus_ = sys_.mkdir("bus");
        Dir pci = bus_.mkdir("pci");
        pciDevices_ = pci.mkdir("devices");
        pciDrivers_ = pci.mkdir("drivers");
        dev_.file("iommu", "", 0);
        devVfio_ = dev_.mkdir("vfio");
        devVfioDevices_ = devVfio_.mkdir("devices");

        for (const auto& u : host_.units) {
            Dir ud = iommu.mkdir(u.name);
            Dir ii = ud.mkdir("intel-iommu");
            ii.file("cap", hex64(u.cap));
            ii.file("ecap", hex64(u.ecap));
            ii.file("version", line(u.version));
            ii.file("address", hex64(0xc5ffc000ULL - 0x1000ULL * unitDevs_.size()));
            unitDevs_.emplace(u.name, ud.mkdir("devices"));
            ud.link("../../../../class/iommu", "subsystem");
            ud.file("uevent", "");
            classIommu.link("../../devices/virtual/iommu/" + u.name, u.name);
        }
        for (const auto& g : host_.groups) {
            Dir gd = groupsDir_.mkdirAt(std::to_string(g.id));
            gd.file("type", line(g.type));
            std::string rr;
            for (const auto& r : g.reservedRegions) {
                rr += r;
                rr += '\n';
            }
            gd.file("reserved_regions", rr);
            groupDevs_.emplace(g.id, gd.mkdirAt("devices"));
        }

        std::unordered_map<std::string, std::vector<std::string>> vfsOf;
        for (const auto& d : host_.devices) {
            if (!d.physfn.empty()) {
                vfsOf[d.physfn].push_back(d.address);
            }
        }
        for (const auto& d : host_.devices) {
            // pci<DDDD>:<BB> of the function's bus; a VF's is its PF's (VFs do not nest).
            const std::string& base = d.physfn.empty() ? d.address : d.physfn;
            writeFunction(d, "pci" + base.substr(0, 7), vfsOf);
        }
        for (const auto& v : host_.softwareVdpa) {
            const std::string mgmt = v.mgmtdev.empty() ? "vdpasim_net" : v.mgmtdev;
            auto it = softwareParents_.find(mgmt);
            if (it == softwareParents_.end()) {
                it = softwareParents_.emplace(mgmt, devices_.mkdir(mgmt)).first;
            }
            writeVdpa(v, it->second, "../../../devices/" + mgmt + "/" + v.name, 3);
        }
    }

private:
    Dir& pciRoot(const std::string& name) {
        auto it = pciRoots_.find(name);
        if (it == pciRoots_.end()) {
            it = pciRoots_.emplace(name, devices_.mkdirAt(name)).first;
        }
        return it->second;
    }

    Dir& subdir(std::map<std::string, Dir>& cache, const Dir& parent, const std::string& name) {
        auto it = cache.find(name);
        if (it == cache.end()) {
            it = cache.emplace(name, parent.mkdirAt(name)).first;
        }
        return it->second;
    }

    // bus/pci/drivers/<drv>/, made once per driver.
    void pciDriver(const std::string& drv) { subdir(pciDriverDirs_, pciDrivers_, drv); }

    void writeFunction(const DeviceSpec& d, const std::string& parent,
                       const std::unordered_map<std::string, std::vector<std::string>>& vfsOf) {
        const std::string rel = parent + "/" + d.address; // below sys/devices
        Dir f = pciRoot(parent).mkdirAt(d.address);
        f.file("vendor", hex(d.vendor, 4));
        f.file("device", hex(d.device, 4));
        f.file("subsystem_vendor", hex(d.subsystemVendor, 4));
        f.file("subsystem_device", hex(d.subsystemDevice, 4));
        f.file("class", hex(d.classCode, 6));
        f.file("revision", hex(d.revision, 2));
        const auto cfg = buildConfig(d);
        f.file("config", cfg.data(), cfg.size());
        f.file("numa_node", line(d.numaNode));
        f.file("driver_override", d.driverOverride.empty() ? "(null)\n" : line(d.driverOverride));
        f.file("irq", "0\n");
        f.file("resource", resourceText(cfg));
        // What udev reads: the subsystem link and the uevent properties.
        f.link("../../../bus/pci", "subsystem");
        f.file("uevent", pciUevent(d));
        pciDevices_.link("../../../devices/" + rel, d.address);
        if (!d.driver.empty()) {
            f.link("../../../bus/pci/drivers/" + d.driver, "driver");
            pciDriver(d.driver);
        }
        if (d.group) {
            f.link("../../../kernel/iommu_groups/" + std::to_string(*d.group), "iommu_group");
            groupDevs_.at(*d.group).link("../../../../devices/" + rel, d.address);
        }
        if (!d.iommu.empty()) {
            f.link("../../virtual/iommu/" + d.iommu, "iommu");
            unitDevs_.at(d.iommu).link("../../../../" + rel, d.address);
        }
        if (d.sriov && d.physfn.empty()) {
            const auto& s = *d.sriov;
            f.file("sriov_totalvfs", line(s.totalVfs));
            f.file("sriov_numvfs", line(s.numVfs));
            f.file("sriov_offset", line(s.firstVfOffset));
            f.file("sriov_stride", line(s.vfStride));
            f.file("sriov_vf_device", hex64(s.vfDevice));
            if (auto it = vfsOf.find(d.address); it != vfsOf.end()) {
                for (size_t i = 0; i < it->second.size(); ++i) {
                    f.link("../" + it->second[i], "virtfn" + std::to_string(i));
                }
            }
        }
        if (!d.physfn.empty()) {
            f.link("../" + d.physfn, "physfn");
        }
        if (d.vfio) {
            const std::string name = "vfio" + std::to_string(*d.vfio);
            Dir vd = f.mkdirAt("vfio-dev");
            Dir v = vd.mkdirAt(name);
            v.file("dev", std::to_string(kVfioMajor) + ":" + std::to_string(*d.vfio) + "\n");
            if (!classVfioDev_.valid()) {
                classVfioDev_ = sys_.mkdirAt("class/vfio-dev");
            }
            classVfioDev_.link("../../devices/" + rel + "/vfio-dev/" + name, name);
            v.link("../../../../../class/vfio-dev", "subsystem");
            v.file("uevent", "MAJOR=" + std::to_string(kVfioMajor) + "\nMINOR=" +
                                 std::to_string(*d.vfio) + "\nDEVNAME=vfio/devices/" + name + "\n");
            devVfioDevices_.file(name, "", 0);
        }
        if (!d.idxdName.empty()) {
            writeIdxd(d, f, rel);
        }
        for (const auto& v : d.vdpa) {
            writeVdpa(v, f, "../../../devices/" + rel + "/" + v.name, 4);
        }
    }

    void writeIdxd(const DeviceSpec& d, const Dir& f, const std::string& rel) {
        Dir x = f.mkdirAt(d.idxdName);
        x.file("state", "enabled\n");
        x.file("pasid_enabled", d.pasid ? "1\n" : "0\n");
        x.file("max_work_queues", line(static_cast<long long>(d.queues.size() < 8 ? 8 : 16)));
        if (!dsaDevices_.valid()) {
            Dir dsa = bus_.mkdir("dsa");
            dsaDevices_ = dsa.mkdir("devices");
        }
        const std::string xrel = "../../../devices/" + rel + "/" + d.idxdName;
        dsaDevices_.link(xrel, d.idxdName);
        for (const auto& q : d.queues) {
            Dir w = x.mkdirAt(q.name);
            w.file("mode", line(q.mode));
            w.file("type", line(q.type));
            w.file("size", line(q.size));
            w.file("state", line(q.state));
            w.file("name", line(q.wqName));
            w.file("group_id", line(q.groupId));
            w.file("priority", line(q.priority));
            w.file("threshold", line(q.threshold));
            w.link("../../../../../bus/dsa", "subsystem");
            w.file("uevent", "");
            dsaDevices_.link(xrel + "/" + q.name, q.name);
            if (q.charDevice) {
                if (!devDsa_.valid()) {
                    devDsa_ = dev_.mkdir("dsa");
                }
                devDsa_.file(q.name, "", 0);
            }
        }
    }

    // `up` is how many levels the vDPA directory lies below sys/.
    void writeVdpa(const VdpaSpec& v, const Dir& parent, const std::string& busTarget, int up) {
        if (!vdpaDevices_.valid()) {
            Dir vb = bus_.mkdir("vdpa");
            vdpaDevices_ = vb.mkdir("devices");
            vdpaDrivers_ = vb.mkdir("drivers");
        }
        Dir vd = parent.mkdirAt(v.name);
        vdpaDevices_.link(busTarget, v.name);
        std::string dots;
        for (int i = 0; i < up; ++i) {
            dots += "../";
        }
        vd.link(dots + "bus/vdpa", "subsystem");
        vd.file("uevent", v.driver.empty() ? "" : "DRIVER=" + v.driver + "\n");
        if (!v.driver.empty()) {
            vd.link(dots + "bus/vdpa/drivers/" + v.driver, "driver");
            subdir(vdpaDriverDirs_, vdpaDrivers_, v.driver);
        }
        if (v.driver == "vhost_vdpa") {
            const unsigned n = nextVhost_++;
            const std::string name = "vhost-vdpa-" + std::to_string(n);
            Dir h = vd.mkdirAt(name);
            h.file("dev", std::to_string(kVhostVdpaMajor) + ":" + std::to_string(n) + "\n");
            dev_.file(name, "", 0);
        }
    }

    const HostSpec& host_;
    Dir root_;
    Dir sys_, dev_, devices_, bus_, groupsDir_, pciDevices_, pciDrivers_;
    Dir devVfio_, devVfioDevices_, devDsa_, dsaDevices_, vdpaDevices_, vdpaDrivers_;
    Dir classVfioDev_;
    std::unordered_map<std::string, Dir> unitDevs_;
    std::unordered_map<uint32_t, Dir> groupDevs_;
    std::unordered_map<std::string, Dir> pciRoots_;
    std::map<std::string, Dir> softwareParents_;
    std::map<std::string, Dir> pciDriverDirs_;
    std::map<std::string, Dir> vdpaDriverDirs_;
    unsigned nextVhost_ = 0;
};

} // namespace

void writeTree(const HostSpec& spec, const std::string& root) {
    validateHost(spec);
    const HostSpec host = expandHost(spec);

    struct stat st {};
    if (::stat(root.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            throw HostgenError(root + ": exists and is not a directory");
        }
        DIR* dir = ::opendir(root.c_str());
        if (!dir) {
            throw HostgenError(root + ": cannot read: " + std::strerror(errno));
        }
        bool empty = true;
        while (const dirent* e = ::readdir(dir)) {
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
                empty = false;
                break;
            }
        }
        ::closedir(dir);
        if (!empty) {
            throw HostgenError(root + ": exists and is not empty");
        }
    } else {
        std::error_code ec;
        std::filesystem::create_directories(root, ec);
        if (ec) {
            throw HostgenError(root + ": cannot create: " + ec.message());
        }
    }
    int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        throw HostgenError(root + ": cannot open: " + std::strerror(errno));
    }
    TreeWriter(host, Dir(fd, root)).run();
}

} // namespace svad::hostgen
