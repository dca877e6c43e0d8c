// Every sysfs attribute parser, at speed: one small generated host's tree
// (one object of each kind), made once, whose files and links the bytes change before each
// discovery (fuzz_sysfs, which decodes a whole tree from the bytes, also changes the tree's shape,
// and runs a few hundred times a second).
//
// The bytes are records, one after another until they run out:
//   SELECTOR INDEX(2 bytes, LE) ...
// An even SELECTOR changes a file: INDEX (modulo the number of files, in path
// order) picks it, then LEN(2 bytes, LE) DATA are its new contents. An odd one
// changes a link: INDEX picks it, then TARGET up to \0 is where it leads.
// Every change is undone after a discovery of the tree and a refresh of the
// unchanged tree's host (the re-read after hotplug events) naming the functions
// whose files changed, with the kinds of event the last byte's bits give
// (1: a function came or went, 2: a unit, 4: queues, 8: vDPA).
#include "mem_sysfs.h"
#include "svad/core/discovery.h"
#include "svad/core/parse.h"
#include "svad/hostgen/hostgen.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

// One of each kind of object discovery reads, and no more: a VT-d unit, groups
// (one with a reserved region), an SR-IOV PF with a VF and a vDPA device, a
// PASID function on vfio-pci with its cdev, a DSA function with a work queue,
// and a vdpa_sim device.
svad::hostgen::HostSpec smallHost() {
    using namespace svad::hostgen;
    HostSpec h;
    h.name = "fuzz";
    h.units.push_back(UnitSpec{"dmar0", 0x00d2008c40660462ULL, 0xf0ULL, "6:0"});
    for (uint32_t g : {1U, 2U, 3U}) {
        h.groups.push_back(GroupSpec{g, "DMA", {}});
    }
    h.groups[0].reservedRegions.emplace_back("0x00000000fee00000 0x00000000feefffff msi");
    DeviceSpec nic;
    nic.address = "0000:3b:00.0";
    nic.vendor = 0x15b3;
    nic.device = 0x101d;
    nic.driver = "mlx5_core";
    nic.group = 1;
    nic.iommu = "dmar0";
    nic.ats = true;
    nic.acs = true;
    nic.sriov = SriovSpec{8, 1, 0x101e, "vfio-pci"};
    nic.vdpa.push_back(VdpaSpec{"vdpa0", "vhost_vdpa", ""});
    h.devices.push_back(nic);
    DeviceSpec gpu;
    gpu.address = "0000:17:00.0";
    gpu.device = 0x2236;
    gpu.driver = "vfio-pci";
    gpu.group = 2;
    gpu.iommu = "dmar0";
    gpu.vfio = 0;
    gpu.pasid = PasidSpec{20, true, true};
    gpu.pri = true;
    h.devices.push_back(gpu);
    DeviceSpec dsa;
    dsa.address = "0000:6a:01.0";
    dsa.device = 0x0b25;
    dsa.driver = "idxd";
    dsa.group = 3;
    dsa.iommu = "dmar0";
    dsa.configSize = 256;
    dsa.idxdName = "dsa0";
    QueueSpec wq;
    wq.name = "wq0.0";
    dsa.queues.push_back(wq);
    h.devices.push_back(dsa);
    h.softwareVdpa.push_back(VdpaSpec{"vdpa1", "vhost_vdpa", "vdpasim_net"});
    return h;
}

struct Base {
    svad::fuzz::MemSysfs tree;
    std::vector<std::string> files;
    std::vector<std::string> links;
    svad::core::Host host; // the tree's discovery, unchanged: what a refresh starts from
};

Base& base() {
    static Base b = [] {
        namespace fs = std::filesystem;
        const fs::path dir =
            fs::temp_directory_path() / ("svad-fuzz-attrs-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        svad::hostgen::writeTree(smallHost(), dir.string());
        const std::string records = svad::fuzz::MemSysfs::recordsOf((dir / "sys").string());
        fs::remove_all(dir);
        svad::fuzz::MemSysfs tree(reinterpret_cast<const uint8_t*>(records.data()), records.size());
        auto files = tree.filePaths();
        auto links = tree.linkPaths();
        if (files.empty() || links.empty()) {
            std::abort(); // the generator wrote no tree: nothing would be fuzzed
        }
        svad::core::Host host = svad::core::discover(tree);
        return Base{std::move(tree), std::move(files), std::move(links), std::move(host)};
    }();
    return b;
}

uint16_t u16(const uint8_t* data, size_t size, size_t& pos) {
    uint16_t v = 0;
    if (pos < size) {
        v = data[pos++];
    }
    if (pos < size) {
        v = static_cast<uint16_t>(v | data[pos++] << 8U);
    }
    return v;
}

// The PCI function a changed path belongs to (its last address component), if any.
std::string functionOf(const std::string& path) {
    std::string found;
    size_t start = 0;
    while (start < path.size()) {
        size_t end = path.find('/', start);
        end = end == std::string::npos ? path.size() : end;
        const std::string part = path.substr(start, end - start);
        if (svad::core::isPciAddress(part)) {
            found = part;
        }
        start = end + 1;
    }
    return found;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Base& b = base();
    struct Change {
        bool file;
        const std::string* path;
        std::string value; // the original, once swapped in
    };
    std::vector<Change> changes;
    size_t pos = 0;
    while (pos < size) {
        const bool file = data[pos++] % 2 == 0;
        const uint16_t index = u16(data, size, pos);
        std::string value;
        if (file) {
            const size_t len = std::min<size_t>(u16(data, size, pos), size - pos);
            value.assign(reinterpret_cast<const char*>(data + pos), len);
            pos += len;
        } else {
            while (pos < size && data[pos] != 0) {
                value += static_cast<char>(data[pos++]);
            }
            pos += pos < size ? 1 : 0;
        }
        const auto& paths = file ? b.files : b.links;
        const std::string& path = paths[index % paths.size()];
        if (file) {
            b.tree.swapFile(path, value);
        } else {
            b.tree.swapLink(path, value);
        }
        changes.push_back({file, &path, std::move(value)});
    }
    (void)svad::core::discover(b.tree);
    // And the partial re-read after hotplug events: the functions whose files changed
    // are named, the last byte says which other kinds of event came.
    svad::core::HostChanges events;
    for (const auto& c : changes) {
        if (std::string f = functionOf(*c.path); !f.empty()) {
            events.pci.insert(f);
        }
    }
    if (size > 0) {
        const uint8_t kinds = data[size - 1];
        events.pciAddedOrRemoved = (kinds & 1U) != 0;
        events.units = (kinds & 2U) != 0;
        events.queues = (kinds & 4U) != 0;
        events.vdpa = (kinds & 8U) != 0;
    }
    (void)svad::core::refresh(b.tree, b.host, events);
    // Undone in reverse: a path changed twice gets its first value back.
    for (auto it = changes.rbegin(); it != changes.rend(); ++it) {
        if (it->file) {
            b.tree.swapFile(*it->path, it->value);
        } else {
            b.tree.swapLink(*it->path, it->value);
        }
    }
    return 0;
}
