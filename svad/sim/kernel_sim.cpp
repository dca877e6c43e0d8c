#include "svad/sim/kernel_sim.h"

#include "svad/core/pasid_width.h"
#include "svad/ports/node_acl.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <string_view>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

namespace svad::sim {

using ports::FaultQueue;
using ports::HwInfo;
using ports::IovaRange;
using ports::KernelError;
using ports::KernelFeatures;
using ports::Result;
using ports::Status;
using ports::UniqueFd;

namespace {

constexpr size_t kMinSweep = 256;     // files handed out before the first lazy sweep
constexpr size_t kMemfdNameMax = 249; // NAME_MAX - strlen("memfd:")
constexpr const char* kBuiltWithout = "simulated kernel built without ";

KernelError makeError(int err, const std::string& what, const std::string& detail = {}) {
    std::string m = what + ": " + std::system_category().message(err);
    if (!detail.empty()) {
        m += " (" + detail + ")";
    }
    return KernelError{err, std::move(m)};
}

std::string onFd(const std::string& op, int fd) {
    return op + " on fd " + std::to_string(fd);
}

} // namespace

// ---- SimFeatures / SimConfig ------------------------------------------------

bool SimFeatures::set(std::string_view name, bool on) {
    const std::pair<std::string_view, bool SimFeatures::*> fields[] = {
        {"iommufd", &SimFeatures::iommufd},     {"rlimitMode", &SimFeatures::rlimitMode},
        {"hwInfo", &SimFeatures::hwInfo},       {"faultQueue", &SimFeatures::faultQueue},
        {"vfioCdev", &SimFeatures::vfioCdev},   {"pasidAttach", &SimFeatures::pasidAttach},
        {"vhostVdpa", &SimFeatures::vhostVdpa}, {"idxd", &SimFeatures::idxd},
    };
    for (const auto& [n, field] : fields) {
        if (n == name) {
            this->*field = on;
            return true;
        }
    }
    return false;
}

namespace {

// The host's functions by address (they live as long as `host`).
std::unordered_map<std::string_view, const core::PciDevice*> byAddress(const core::Host& host) {
    std::unordered_map<std::string_view, const core::PciDevice*> out;
    out.reserve(host.devices.size());
    for (const auto& d : host.devices) {
        out.emplace(d.address, &d);
    }
    return out;
}

uint8_t pasidLog2Of(const core::Host& host,
                    const std::unordered_map<std::string_view, const core::PciDevice*>& devices,
                    const core::PciDevice& dev) {
    const core::PciDevice* pf = nullptr;
    if (!dev.physfn.empty()) {
        if (auto it = devices.find(dev.physfn); it != devices.end()) {
            pf = it->second;
        }
    }
    return static_cast<uint8_t>(core::pasidWidth(dev, pf, host.units));
}

} // namespace

uint8_t SimConfig::pasidLog2(const core::Host& host, const std::string& address) {
    const auto devices = byAddress(host);
    auto it = devices.find(address);
    return it == devices.end() ? 0 : pasidLog2Of(host, devices, *it->second);
}

// Called on svad's loop with every host it publishes: one pass, not one a function.
SimConfig SimConfig::fromHost(const core::Host& host, const std::string& devRoot) {
    SimConfig c;
    c.devRoot = devRoot;
    const auto devices = byAddress(host);
    for (const auto& d : host.devices) {
        if (!d.vfioDevice.empty()) {
            c.vfio[d.vfioDevice] = pasidLog2Of(host, devices, d);
        }
    }
    for (const auto& v : host.vdpa) {
        if (!v.vhostDevice.empty()) {
            c.vhostVdpa[v.vhostDevice] = SimVdpa{2, 2};
        }
    }
    for (const auto& q : host.queues) {
        if (!q.charDevice.empty()) {
            c.workQueues.insert(q.name);
        }
    }
    return c;
}

// ---- KernelSim ----------------------------------------------------------------

SimConfig KernelSim::config() const {
    std::lock_guard lock(mu_);
    return config_;
}

void KernelSim::setDevices(const SimConfig& devices) {
    std::lock_guard lock(mu_);
    config_.vfio = devices.vfio;
    config_.vhostVdpa = devices.vhostVdpa;
    config_.workQueues = devices.workQueues;
}

void KernelSim::addVfioDevice(const std::string& vfioName, uint8_t pasidLog2) {
    std::lock_guard lock(mu_);
    config_.vfio[vfioName] = pasidLog2;
}

uint32_t KernelSim::Context::allocId() const {
    uint32_t id = 1;
    for (const auto& [used, obj] : objects) {
        if (used != id) {
            break;
        }
        ++id;
    }
    return id;
}

KernelSim::KernelSim(SimConfig config) : config_(std::move(config)), sweepAt_(kMinSweep) {}

KernelSim::~KernelSim() = default;

class KernelSim::Locked {
public:
    explicit Locked(KernelSim& k) : k_(k), lock_(k.mu_) {}
    // Runs before lock_ is released: the write happens under the mutex.
    ~Locked() { k_.saveIfChangedLocked(); }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    Locked(Locked&&) = delete;
    Locked& operator=(Locked&&) = delete;

private:
    KernelSim& k_;
    std::lock_guard<std::mutex> lock_;
};

KernelFeatures KernelSim::probe() {
    const SimFeatures& f = config_.features;
    KernelFeatures k;
    auto report = [&k](bool& out, const char* name, bool own, bool dependency,
                       const char* dependencyName) {
        out = own && dependency;
        if (!own) {
            k.absentReasons.emplace_back(name, std::string(kBuiltWithout) + name);
        } else if (!dependency) {
            k.absentReasons.emplace_back(name, std::string(kBuiltWithout) + dependencyName);
        }
    };
    report(k.iommufd, "iommufd", f.iommufd, true, "");
    report(k.rlimitMode, "rlimitMode", f.rlimitMode, f.iommufd, "iommufd");
    report(k.hwInfo, "hwInfo", f.hwInfo, f.iommufd, "iommufd");
    report(k.faultQueue, "faultQueue", f.faultQueue, f.iommufd, "iommufd");
    report(k.vfioCdev, "vfioCdev", f.vfioCdev, true, "");
    report(k.pasidAttach, "pasidAttach", f.pasidAttach, f.iommufd && f.vfioCdev,
           f.iommufd ? "vfioCdev" : "iommufd");
    report(k.vhostVdpa, "vhostVdpa", f.vhostVdpa, true, "");
    report(k.idxd, "idxd", f.idxd, true, "");
    return k;
}

// ---- files ------------------------------------------------------------------

Result<UniqueFd> KernelSim::makeFileLocked(File file, FileKey* key) {
    if (file.memfdName.size() > kMemfdNameMax) {
        file.memfdName.resize(kMemfdNameMax);
    }
    UniqueFd fd(::memfd_create(file.memfdName.c_str(), MFD_CLOEXEC));
    if (!fd.valid()) {
        return makeError(errno, "memfd_create " + file.memfdName);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return makeError(errno, "fstat " + file.memfdName);
    }
    const FileKey k{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    // A file we still track under this inode was closed: its inode is reused.
    if (auto stale = files_.find(k); stale != files_.end()) {
        releaseFileLocked(stale);
    }
    files_.emplace(k, std::move(file));
    if (key) {
        *key = k;
    }
    if (files_.size() >= sweepAt_) {
        sweepLocked();
        sweepAt_ = std::max(kMinSweep, 2 * files_.size());
    }
    return fd;
}

KernelSim::File* KernelSim::lookupLocked(int fd, const std::string& op, KernelError* err,
                                         FileKey* key) {
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
        *err = makeError(EBADF, onFd(op, fd));
        return nullptr;
    }
    const FileKey k{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    auto it = files_.find(k);
    if (it == files_.end()) {
        *err = makeError(EBADF, onFd(op, fd), "not a simulated kernel object");
        return nullptr;
    }
    // Double check through the name: an inode number can come back after
    // the file we knew under it was closed.
    char buf[512];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
    if (n > 0) {
        const std::string expected = "/memfd:" + it->second.memfdName + " (deleted)";
        if (std::string_view(buf, static_cast<size_t>(n)) != expected) {
            releaseFileLocked(it);
            *err = makeError(EBADF, onFd(op, fd), "not a simulated kernel object");
            return nullptr;
        }
    }
    if (key) {
        *key = k;
    }
    return &it->second;
}

std::optional<std::set<KernelSim::FileKey>> KernelSim::openKeys(bool checkNames) const {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) {
        return std::nullopt;
    }
    const int self = ::dirfd(dir);
    std::set<FileKey> keys;
    while (const dirent* e = ::readdir(dir)) {
        const std::string_view name(e->d_name);
        int fd = -1;
        auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), fd);
        if (ec != std::errc() || p != name.data() + name.size() || fd == self) {
            continue;
        }
        // Through the /proc link rather than fstat(fd): the fd is another
        // thread's, which may close it at any moment (then this finds
        // nothing, or what took its number).
        struct stat st {};
        if (::fstatat(self, e->d_name, &st, 0) != 0) {
            continue;
        }
        const FileKey k{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
        auto it = files_.find(k);
        if (it == files_.end()) {
            continue;
        }
        if (checkNames) {
            char buf[512];
            const ssize_t n = ::readlinkat(self, e->d_name, buf, sizeof buf);
            const std::string expected = "/memfd:" + it->second.memfdName + " (deleted)";
            if (n <= 0 || std::string_view(buf, static_cast<size_t>(n)) != expected) {
                continue;
            }
        }
        keys.insert(k);
    }
    ::closedir(dir);
    return keys;
}

void KernelSim::sweepLocked(bool checkNames) {
    const auto open = openKeys(checkNames);
    if (!open) {
        return;
    }
    std::vector<FileKey> closed;
    for (const auto& [k, f] : files_) {
        if (!open->count(k)) {
            closed.push_back(k);
        }
    }
    for (const auto& k : closed) {
        if (auto it = files_.find(k); it != files_.end()) {
            releaseFileLocked(it);
        }
    }
}

void KernelSim::collect() {
    Locked lock(*this);
    sweepLocked();
}

void KernelSim::releaseFileLocked(Files::iterator it) {
    File f = std::move(it->second);
    files_.erase(it);
    switch (f.kind) {
    case FileKind::Iommufd:
    case FileKind::Fault:
        // A fault object outlives its fd until IOMMU_DESTROY or the context.
        dropContextIfUnusedLocked(f.ctx);
        break;
    case FileKind::Vfio:
        if (f.binding) {
            auto c = contexts_.find(f.binding->ctx);
            if (c != contexts_.end()) {
                detachAllLocked(*f.binding);
                c->second.objects.erase(f.binding->devId);
            }
            dropContextIfUnusedLocked(f.binding->ctx);
        }
        break;
    case FileKind::VhostVdpa:
    case FileKind::WorkQueue:
        break;
    }
}

void KernelSim::dropContextIfUnusedLocked(uint32_t ctx) {
    for (const auto& [k, f] : files_) {
        if ((f.kind == FileKind::Iommufd || f.kind == FileKind::Fault) && f.ctx == ctx) {
            return;
        }
        if (f.kind == FileKind::Vfio && f.binding && f.binding->ctx == ctx) {
            return;
        }
    }
    contexts_.erase(ctx);
}

void KernelSim::unrefIoasLocked(Context& c, uint32_t ioasId) {
    auto o = c.objects.find(ioasId);
    if (o != c.objects.end() && o->second.kind == ObjectKind::Ioas && o->second.attachments > 0) {
        --o->second.attachments;
    }
}

void KernelSim::detachAllLocked(Binding& b) {
    auto c = contexts_.find(b.ctx);
    if (c == contexts_.end()) {
        return;
    }
    if (b.ridIoas) {
        unrefIoasLocked(c->second, *b.ridIoas);
        b.ridIoas.reset();
    }
    for (const auto& [pasid, ioas] : b.pasidIoas) {
        unrefIoasLocked(c->second, ioas);
    }
    b.pasidIoas.clear();
}

uint8_t KernelSim::pasidLog2(const std::string& vfioName) const {
    auto it = config_.vfio.find(vfioName);
    return it == config_.vfio.end() ? 0 : std::min<uint8_t>(it->second, 31);
}

SimStats KernelSim::stats() const {
    std::lock_guard lock(mu_);
    SimStats s;
    s.files = files_.size();
    s.contexts = contexts_.size();
    for (const auto& [id, c] : contexts_) {
        s.objects += c.objects.size();
    }
    for (const auto& [k, f] : files_) {
        if (f.binding) {
            ++s.bindings;
            s.attachments += (f.binding->ridIoas ? 1 : 0) + f.binding->pasidIoas.size();
        }
    }
    return s;
}

// ---- iommufd ----------------------------------------------------------------

Result<UniqueFd> KernelSim::openIommufd() {
    const std::string what = "open " + (config_.devRoot == "/" ? "" : config_.devRoot) + "/iommu";
    if (!config_.features.iommufd) {
        return makeError(ENOENT, what, std::string(kBuiltWithout) + "iommufd");
    }
    Locked lock(*this);
    const uint32_t instance = nextInstance_++;
    const std::string label = "iommufd:" + std::to_string(instance);
    contexts_.emplace(instance, Context{});
    File f;
    f.kind = FileKind::Iommufd;
    f.memfdName = "svad-sim:" + label;
    f.label = label;
    f.ctx = instance;
    auto r = makeFileLocked(std::move(f));
    if (!r) {
        contexts_.erase(instance);
    }
    return r;
}

Result<uint32_t> KernelSim::ioasAlloc(int iommufd) {
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(iommufd, "IOMMU_IOAS_ALLOC", &err);
    if (!f) {
        return err;
    }
    const std::string what = "IOMMU_IOAS_ALLOC on " + f->label;
    if (f->kind != FileKind::Iommufd) {
        return makeError(ENOTTY, what);
    }
    Context& c = contexts_.at(f->ctx);
    const uint32_t id = c.allocId();
    c.objects.emplace(id, Object{ObjectKind::Ioas, 0, {}, {}});
    return id;
}

Result<std::vector<IovaRange>> KernelSim::ioasIovaRanges(int iommufd, uint32_t ioasId) {
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(iommufd, "IOMMU_IOAS_IOVA_RANGES", &err);
    if (!f) {
        return err;
    }
    const std::string what = "IOMMU_IOAS_IOVA_RANGES on " + f->label;
    if (f->kind != FileKind::Iommufd) {
        return makeError(ENOTTY, what);
    }
    const Context& c = contexts_.at(f->ctx);
    auto o = c.objects.find(ioasId);
    if (o == c.objects.end() || o->second.kind != ObjectKind::Ioas) {
        return makeError(ENOENT, what, "no IOAS " + std::to_string(ioasId));
    }
    return std::vector<IovaRange>{{0, kMsiStart - 1}, {kMsiLast + 1, kIovaLast}};
}

Status KernelSim::destroy(int iommufd, uint32_t objectId) {
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(iommufd, "IOMMU_DESTROY", &err);
    if (!f) {
        return err;
    }
    const std::string what = "IOMMU_DESTROY on " + f->label;
    if (f->kind != FileKind::Iommufd) {
        return makeError(ENOTTY, what);
    }
    Context& c = contexts_.at(f->ctx);
    auto o = c.objects.find(objectId);
    if (o != c.objects.end() &&
        (o->second.kind == ObjectKind::Device ||
         (o->second.kind == ObjectKind::Ioas && o->second.attachments > 0))) {
        // A device (and what it attached) goes when its fd is closed: notice
        // the closes first. The iommufd is open, so the context stays.
        sweepLocked();
        o = c.objects.find(objectId);
    }
    if (o == c.objects.end()) {
        return makeError(ENOENT, what, "no object " + std::to_string(objectId));
    }
    switch (o->second.kind) {
    case ObjectKind::Ioas:
        if (o->second.attachments > 0) {
            return makeError(EBUSY, what,
                             "IOAS " + std::to_string(objectId) + " has " +
                                 std::to_string(o->second.attachments) + " attachment(s)");
        }
        break;
    case ObjectKind::Device:
        return makeError(EBUSY, what,
                         "object " + std::to_string(objectId) + " is device " + o->second.device +
                             ", unbound by closing its fd");
    case ObjectKind::Fault:
        if (auto ff = files_.find(o->second.file);
            ff != files_.end() && ff->second.kind == FileKind::Fault && ff->second.ctx == f->ctx &&
            ff->second.faultId == objectId) {
            const auto open = openKeys();
            if (!open || open->count(o->second.file)) {
                return makeError(EBUSY, what,
                                 "fault queue " + std::to_string(objectId) + " has its fd open");
            }
            releaseFileLocked(ff); // the iommufd is open: the context stays
        }
        break;
    }
    c.objects.erase(o);
    return ports::okStatus();
}

Result<HwInfo> KernelSim::hwInfo(int iommufd, uint32_t devId) {
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(iommufd, "IOMMU_GET_HW_INFO", &err);
    if (!f) {
        return err;
    }
    const std::string what = "IOMMU_GET_HW_INFO on " + f->label;
    if (f->kind != FileKind::Iommufd) {
        return makeError(ENOTTY, what);
    }
    if (!config_.features.hwInfo) {
        return makeError(ENOTTY, what, std::string(kBuiltWithout) + "hwInfo");
    }
    Context& c = contexts_.at(f->ctx);
    auto o = c.objects.find(devId);
    if (o != c.objects.end() && o->second.kind == ObjectKind::Device) {
        // The device object went away if its fd was closed.
        const auto open = openKeys();
        if (open && !open->count(o->second.file)) {
            if (auto df = files_.find(o->second.file); df != files_.end()) {
                releaseFileLocked(df);
            }
            o = c.objects.find(devId);
        }
    }
    if (o == c.objects.end() || o->second.kind != ObjectKind::Device) {
        return makeError(ENOENT, what, "no device " + std::to_string(devId));
    }
    HwInfo info;
    info.type = kHwInfoTypeIntelVtd;
    info.capabilities = 0;
    info.maxPasidLog2 = config_.features.pasidAttach ? pasidLog2(o->second.device) : 0;
    return info;
}

Result<FaultQueue> KernelSim::faultQueueAlloc(int iommufd) {
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(iommufd, "IOMMU_FAULT_QUEUE_ALLOC", &err);
    if (!f) {
        return err;
    }
    const std::string what = "IOMMU_FAULT_QUEUE_ALLOC on " + f->label;
    if (f->kind != FileKind::Iommufd) {
        return makeError(ENOTTY, what);
    }
    if (!config_.features.faultQueue) {
        return makeError(ENOTTY, what, std::string(kBuiltWithout) + "faultQueue");
    }
    const uint32_t ctx = f->ctx;
    Context& c = contexts_.at(ctx);
    const uint32_t id = c.allocId();
    const std::string label = "fault:" + std::to_string(ctx) + "." + std::to_string(id);
    File q;
    q.kind = FileKind::Fault;
    q.memfdName = "svad-sim:" + label;
    q.label = label;
    q.ctx = ctx;
    q.faultId = id;
    FileKey key;
    auto fd = makeFileLocked(std::move(q), &key); // f may dangle from here on
    if (!fd) {
        return fd.error();
    }
    c.objects.emplace(id, Object{ObjectKind::Fault, 0, key, {}});
    return FaultQueue{id, std::move(fd.value())};
}

// Opens a simulated device node: the feature must be on and the node known.
Result<UniqueFd> KernelSim::openNodeLocked(FileKind kind, bool featureOn, const char* feature,
                                           bool known, const std::string& relPath,
                                           const std::string& memfdPrefix,
                                           const std::string& name) {
    const std::string root = config_.devRoot == "/" ? "" : config_.devRoot;
    const std::string what = "open " + root + relPath;
    if (!featureOn) {
        return makeError(ENOENT, what, std::string(kBuiltWithout) + feature);
    }
    if (!known) {
        return makeError(ENOENT, what);
    }
    File f;
    f.kind = kind;
    f.memfdName = memfdPrefix + name;
    f.label = name;
    return makeFileLocked(std::move(f));
}

// ---- VFIO ---------------------------------------------------------------------

Result<UniqueFd> KernelSim::openVfioDevice(const std::string& vfioName) {
    Locked lock(*this);
    return openNodeLocked(FileKind::Vfio, config_.features.vfioCdev, "vfioCdev",
                          config_.vfio.count(vfioName) != 0, "/vfio/devices/" + vfioName,
                          "svad-sim:vfio:", vfioName);
}

Result<uint32_t> KernelSim::vfioBind(int deviceFd, int iommufd) {
    static const std::string op = "VFIO_DEVICE_BIND_IOMMUFD";
    Locked lock(*this);
    KernelError err;
    FileKey devKey;
    File* dev = lookupLocked(deviceFd, op, &err, &devKey);
    if (!dev) {
        return err;
    }
    const std::string what = op + " on " + dev->label;
    if (dev->kind != FileKind::Vfio) {
        return makeError(ENOTTY, what);
    }
    File* ictx = lookupLocked(iommufd, op, &err);
    if (!ictx) {
        return makeError(err.err, what, "iommufd " + std::to_string(iommufd) + " is not open");
    }
    if (ictx->kind != FileKind::Iommufd) {
        return makeError(EBADFD, what, ictx->label + " is not an iommufd");
    }
    if (dev->binding) {
        return makeError(EBUSY, what, "this fd is already bound");
    }
    // Another open fd of the same device that is bound: busy while it is open.
    std::vector<FileKey> others;
    for (const auto& [k, f] : files_) {
        if (f.kind == FileKind::Vfio && f.binding && f.label == dev->label && k != devKey) {
            others.push_back(k);
        }
    }
    if (!others.empty()) {
        const auto open = openKeys();
        for (const auto& k : others) {
            if (!open || open->count(k)) {
                return makeError(EBUSY, what, dev->label + " is bound through another open fd");
            }
            releaseFileLocked(files_.find(k)); // closed: its binding ended
        }
    }
    const uint32_t ctx = ictx->ctx;
    Context& c = contexts_.at(ctx);
    const uint32_t id = c.allocId();
    c.objects.emplace(id, Object{ObjectKind::Device, 0, devKey, dev->label});
    Binding b;
    b.ctx = ctx;
    b.devId = id;
    dev->binding = std::move(b);
    return id;
}

// The VFIO device behind `deviceFd`, bound to an iommufd; nullptr with `err`
// set otherwise. `what` names the call for messages.
KernelSim::File* KernelSim::boundVfioLocked(int deviceFd, const std::string& op,
                                            std::optional<uint32_t> pasid, std::string& what,
                                            KernelError& err) {
    File* dev = lookupLocked(deviceFd, op, &err);
    if (!dev) {
        return nullptr;
    }
    what = op + " on " + dev->label + (pasid ? " PASID " + std::to_string(*pasid) : "");
    if (dev->kind != FileKind::Vfio) {
        err = makeError(ENOTTY, what);
        return nullptr;
    }
    if (!dev->binding) {
        err = makeError(EINVAL, what, "not bound to an iommufd");
        return nullptr;
    }
    return dev;
}

Status KernelSim::vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) {
    static const std::string op = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
    Locked lock(*this);
    KernelError err;
    std::string what;
    File* dev = boundVfioLocked(deviceFd, op, pasid, what, err);
    if (!dev) {
        return err;
    }
    if (pasid) {
        if (!config_.features.pasidAttach) {
            return makeError(EINVAL, what, std::string(kBuiltWithout) + "pasidAttach");
        }
        const uint8_t log2 = pasidLog2(dev->label);
        if (log2 == 0) {
            return makeError(EOPNOTSUPP, what, dev->label + " has no PASID support");
        }
        if (*pasid == 0 || *pasid >= (uint64_t{1} << log2)) {
            return makeError(EINVAL, what,
                             "PASID out of range [1, 2^" + std::to_string(log2) + ")");
        }
    }
    Binding& b = *dev->binding;
    Context& c = contexts_.at(b.ctx);
    auto o = c.objects.find(ptId);
    if (o == c.objects.end()) {
        return makeError(ENOENT, what, "no object " + std::to_string(ptId));
    }
    if (o->second.kind != ObjectKind::Ioas) {
        return makeError(EINVAL, what, "object " + std::to_string(ptId) + " is not an IOAS");
    }
    // Attaching over an attachment replaces it, as the kernel does.
    std::optional<uint32_t> old;
    if (pasid) {
        if (auto p = b.pasidIoas.find(*pasid); p != b.pasidIoas.end()) {
            old = p->second;
        }
        b.pasidIoas[*pasid] = ptId;
    } else {
        old = b.ridIoas;
        b.ridIoas = ptId;
    }
    ++o->second.attachments;
    if (old) {
        unrefIoasLocked(c, *old);
    }
    return ports::okStatus();
}

Status KernelSim::vfioDetach(int deviceFd, std::optional<uint32_t> pasid) {
    static const std::string op = "VFIO_DEVICE_DETACH_IOMMUFD_PT";
    Locked lock(*this);
    KernelError err;
    std::string what;
    File* dev = boundVfioLocked(deviceFd, op, pasid, what, err);
    if (!dev) {
        return err;
    }
    Binding& b = *dev->binding;
    Context& c = contexts_.at(b.ctx);
    if (pasid) {
        if (!config_.features.pasidAttach) {
            return makeError(EINVAL, what, std::string(kBuiltWithout) + "pasidAttach");
        }
        if (pasidLog2(dev->label) == 0) {
            return makeError(EOPNOTSUPP, what, dev->label + " has no PASID support");
        }
        auto p = b.pasidIoas.find(*pasid);
        if (p == b.pasidIoas.end()) {
            return makeError(EINVAL, what, "PASID not attached");
        }
        unrefIoasLocked(c, p->second);
        b.pasidIoas.erase(p);
    } else {
        if (!b.ridIoas) {
            return makeError(EINVAL, what, "not attached");
        }
        unrefIoasLocked(c, *b.ridIoas);
        b.ridIoas.reset();
    }
    return ports::okStatus();
}

// ---- vhost-vdpa ---------------------------------------------------------------

Result<UniqueFd> KernelSim::openVhostVdpa(const std::string& vhostName) {
    Locked lock(*this);
    return openNodeLocked(FileKind::VhostVdpa, config_.features.vhostVdpa, "vhostVdpa",
                          config_.vhostVdpa.count(vhostName) != 0, "/" + vhostName,
                          "svad-sim:vhost-vdpa:", vhostName);
}

Result<uint32_t> KernelSim::vdpaGroupNum(int vhostFd) {
    static const std::string op = "VHOST_VDPA_GET_GROUP_NUM";
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(vhostFd, op, &err);
    if (!f) {
        return err;
    }
    if (f->kind != FileKind::VhostVdpa) {
        return makeError(ENOTTY, op + " on " + f->label);
    }
    return config_.vhostVdpa.at(f->label).groups;
}

Result<uint32_t> KernelSim::vdpaAsNum(int vhostFd) {
    static const std::string op = "VHOST_VDPA_GET_AS_NUM";
    Locked lock(*this);
    KernelError err;
    File* f = lookupLocked(vhostFd, op, &err);
    if (!f) {
        return err;
    }
    if (f->kind != FileKind::VhostVdpa) {
        return makeError(ENOTTY, op + " on " + f->label);
    }
    return config_.vhostVdpa.at(f->label).addressSpaces;
}

// ---- idxd -----------------------------------------------------------------------

Result<UniqueFd> KernelSim::openWorkQueue(const std::string& wqName) {
    Locked lock(*this);
    return openNodeLocked(FileKind::WorkQueue, config_.features.idxd, "idxd",
                          config_.workQueues.count(wqName) != 0, "/dsa/" + wqName,
                          "svad-sim:wq:", wqName);
}

// ---- nodes a client opens itself -------------------------------------------------------

std::string KernelSim::nodePath(const std::string& node) const {
    std::lock_guard lock(mu_);
    return node_acl::underRoot(config_.devRoot, node);
}

Status KernelSim::grantNode(const std::string& path, uid_t uid) {
    std::lock_guard lock(mu_);
    const std::string what = "grant access to " + path;
    if (!node_acl::lexicallyUnder(config_.devRoot, path)) {
        return makeError(EINVAL, what, "not a node under " + config_.devRoot);
    }
    if (config_.nodeAcls) {
        if (auto s = node_acl::grantUser(path, uid); !s) {
            return s;
        }
    } else {
        const std::string dsa = node_acl::underRoot(config_.devRoot, "dsa/");
        if (path.rfind(dsa, 0) != 0 || config_.workQueues.count(path.substr(dsa.size())) == 0) {
            return makeError(ENOENT, what);
        }
    }
    grants_[path].insert(uid);
    return ports::okStatus();
}

Status KernelSim::revokeNode(const std::string& path, uid_t uid) {
    std::lock_guard lock(mu_);
    if (!node_acl::lexicallyUnder(config_.devRoot, path)) {
        return makeError(EINVAL, "revoke access to " + path, "not a node under " + config_.devRoot);
    }
    if (config_.nodeAcls) {
        if (auto s = node_acl::revokeUser(path, uid); !s) {
            return s;
        }
    }
    if (auto it = grants_.find(path); it != grants_.end()) {
        it->second.erase(uid);
        if (it->second.empty()) {
            grants_.erase(it);
        }
    }
    return ports::okStatus();
}

std::map<std::string, std::set<uid_t>> KernelSim::grants() const {
    std::lock_guard lock(mu_);
    return grants_;
}

// ---- persistence ------------------------------------------------------------------

namespace {

constexpr std::string_view kStateHeader = "svad-kernel-sim 1";

// Names are written as one word: bytes other than printable ASCII, and '%',
// become %XX; "%" alone is the empty name.
std::string encodeName(std::string_view name) {
    if (name.empty()) {
        return "%";
    }
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (const char ch : name) {
        const auto c = static_cast<unsigned char>(ch);
        if (c > ' ' && c < 0x7f && c != '%') {
            out += ch;
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

std::optional<std::string> decodeName(std::string_view word) {
    if (word == "%") {
        return std::string();
    }
    std::string out;
    for (size_t i = 0; i < word.size(); ++i) {
        const auto c = static_cast<unsigned char>(word[i]);
        if (c <= ' ' || c >= 0x7f) {
            return std::nullopt;
        }
        if (c != '%') {
            out += word[i];
            continue;
        }
        unsigned value = 0;
        const char* first = word.data() + i + 1;
        if (i + 2 >= word.size()) {
            return std::nullopt;
        }
        auto [p, ec] = std::from_chars(first, first + 2, value, 16);
        if (ec != std::errc() || p != first + 2) {
            return std::nullopt;
        }
        out += static_cast<char>(value);
        i += 2;
    }
    return out;
}

template <typename T> std::optional<T> parseNumber(std::string_view word) {
    T value{};
    auto [p, ec] = std::from_chars(word.data(), word.data() + word.size(), value);
    if (word.empty() || ec != std::errc() || p != word.data() + word.size()) {
        return std::nullopt;
    }
    return value;
}

// The words of a line, split at single spaces (so "a  b" has an empty word).
std::vector<std::string_view> splitWords(std::string_view line) {
    std::vector<std::string_view> words;
    size_t start = 0;
    while (true) {
        const size_t space = line.find(' ', start);
        words.push_back(line.substr(start, space - start));
        if (space == std::string_view::npos) {
            return words;
        }
        start = space + 1;
    }
}

// The whole content of `path`; nullopt with `error` set if it can't be read,
// and with `error` empty if it does not exist.
std::optional<std::string> readWholeFile(const std::string& path, std::string& error) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno != ENOENT) {
            error = "open " + path + ": " + std::system_category().message(errno);
        }
        return std::nullopt;
    }
    std::string text;
    char buf[4096];
    while (true) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error = "read " + path + ": " + std::system_category().message(errno);
            return std::nullopt;
        }
        if (n == 0) {
            return text;
        }
        text.append(buf, static_cast<size_t>(n));
    }
}

// Writes `data` to "<path>.tmp" and renames it over `path`; the error, or
// empty.
std::string replaceFile(const std::string& path, std::string_view data) {
    const std::string tmp = path + ".tmp";
    auto failed = [&tmp](const std::string& what) {
        std::string why = what + ": " + std::system_category().message(errno);
        ::unlink(tmp.c_str());
        return why;
    };
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) {
        return "open " + tmp + ": " + std::system_category().message(errno);
    }
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return failed("write " + tmp);
        }
        done += static_cast<size_t>(n);
    }
    if (::close(fd.release()) != 0) {
        return failed("close " + tmp);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return failed("rename " + tmp + " to " + path);
    }
    return {};
}

} // namespace

std::string KernelSim::serializeLocked() const {
    auto key = [](const FileKey& k) { return std::to_string(k.dev) + " " + std::to_string(k.ino); };
    auto kindName = [](FileKind kind) {
        switch (kind) {
        case FileKind::Iommufd:
            return "iommufd";
        case FileKind::Vfio:
            return "vfio";
        case FileKind::Fault:
            return "fault";
        case FileKind::VhostVdpa:
            return "vhost-vdpa";
        case FileKind::WorkQueue:
            return "wq";
        }
        return "?";
    };
    std::string out;
    out += kStateHeader;
    out += "\nnext " + std::to_string(nextInstance_) + "\n";
    for (const auto& [ctx, c] : contexts_) {
        const std::string id = std::to_string(ctx);
        out += "context " + id + "\n";
        for (const auto& [objectId, o] : c.objects) {
            out += "object " + id + " " + std::to_string(objectId);
            switch (o.kind) {
            case ObjectKind::Ioas:
                out += " ioas\n";
                break;
            case ObjectKind::Device:
                out += " device\n"; // its file and name come with its binding
                break;
            case ObjectKind::Fault:
                out += " fault " + key(o.file) + "\n";
                break;
            }
        }
    }
    for (const auto& [k, f] : files_) {
        out += "file " + key(k) + " " + kindName(f.kind);
        if (f.kind == FileKind::Iommufd || f.kind == FileKind::Fault) {
            out += " " + std::to_string(f.ctx);
        }
        if (f.kind == FileKind::Fault) {
            out += " " + std::to_string(f.faultId);
        }
        out += " " + encodeName(f.memfdName) + " " + encodeName(f.label) + "\n";
        if (!f.binding) {
            continue;
        }
        const Binding& b = *f.binding;
        out +=
            "bound " + key(k) + " " + std::to_string(b.ctx) + " " + std::to_string(b.devId) + "\n";
        if (b.ridIoas) {
            out += "rid " + key(k) + " " + std::to_string(*b.ridIoas) + "\n";
        }
        for (const auto& [pasid, ioas] : b.pasidIoas) {
            out +=
                "pasid " + key(k) + " " + std::to_string(pasid) + " " + std::to_string(ioas) + "\n";
        }
    }
    out += "end\n";
    return out;
}

bool KernelSim::parseState(std::string_view text, State& out, std::string& error) {
    if (text.empty() || text.back() != '\n') {
        error = "truncated: no newline at the end";
        return false;
    }
    size_t lineNo = 0;
    auto bad = [&lineNo, &error](const std::string& why) {
        error = "line " + std::to_string(lineNo) + ": " + why;
        return false;
    };
    std::set<std::pair<uint32_t, uint32_t>> unboundDevices; // device objects without a binding
    // The IOAS `id` of context `ctx`, or nullptr.
    auto ioasOf = [&out](uint32_t ctx, uint32_t id) -> Object* {
        auto c = out.contexts.find(ctx);
        if (c == out.contexts.end()) {
            return nullptr;
        }
        auto o = c->second.objects.find(id);
        return o != c->second.objects.end() && o->second.kind == ObjectKind::Ioas ? &o->second
                                                                                  : nullptr;
    };
    bool ended = false;
    size_t start = 0;
    while (start < text.size()) {
        const size_t eol = text.find('\n', start);
        const std::string_view line = text.substr(start, eol - start);
        start = eol + 1;
        ++lineNo;
        if (ended) {
            return bad("text after \"end\"");
        }
        if (lineNo == 1) {
            if (line != kStateHeader) {
                return bad("not \"" + std::string(kStateHeader) + "\"");
            }
            continue;
        }
        const auto w = splitWords(line);
        if (std::find(w.begin(), w.end(), std::string_view()) != w.end()) {
            return bad("empty word");
        }
        const std::string_view tag = w[0];
        if (lineNo == 2) {
            const auto next =
                w.size() == 2 && tag == "next" ? parseNumber<uint32_t>(w[1]) : std::nullopt;
            if (!next || *next == 0) {
                return bad("not \"next <instance>\"");
            }
            out.nextInstance = *next;
            continue;
        }
        // The file a line names by inode, if it names one.
        auto fileKey = [&w](size_t at) -> std::optional<FileKey> {
            const auto dev = parseNumber<uint64_t>(w[at]);
            const auto ino = parseNumber<uint64_t>(w[at + 1]);
            if (!dev || !ino) {
                return std::nullopt;
            }
            return FileKey{*dev, *ino};
        };
        if (tag == "end" && w.size() == 1) {
            ended = true;
        } else if (tag == "context" && w.size() == 2) {
            const auto ctx = parseNumber<uint32_t>(w[1]);
            if (!ctx || *ctx == 0 || *ctx >= out.nextInstance) {
                return bad("bad instance number");
            }
            if (!out.contexts.emplace(*ctx, Context{}).second) {
                return bad("context " + std::to_string(*ctx) + " twice");
            }
        } else if (tag == "object" && (w.size() == 4 || w.size() == 6)) {
            const auto ctx = parseNumber<uint32_t>(w[1]);
            const auto id = parseNumber<uint32_t>(w[2]);
            if (!ctx || !id || *id == 0) {
                return bad("bad object");
            }
            auto c = out.contexts.find(*ctx);
            if (c == out.contexts.end()) {
                return bad("no context " + std::to_string(*ctx));
            }
            Object o;
            if (w[3] == "ioas" && w.size() == 4) {
                o.kind = ObjectKind::Ioas;
            } else if (w[3] == "device" && w.size() == 4) {
                o.kind = ObjectKind::Device;
                unboundDevices.emplace(*ctx, *id);
            } else if (w[3] == "fault" && w.size() == 6) {
                const auto k = fileKey(4);
                if (!k) {
                    return bad("bad inode");
                }
                o.kind = ObjectKind::Fault;
                o.file = *k;
            } else {
                return bad("bad object kind");
            }
            if (!c->second.objects.emplace(*id, std::move(o)).second) {
                return bad("object " + std::to_string(*id) + " twice");
            }
        } else if (tag == "file" && w.size() >= 6) {
            const auto k = fileKey(1);
            if (!k) {
                return bad("bad inode");
            }
            File f;
            size_t names = 4;
            if (w[3] == "iommufd" && w.size() == 7) {
                f.kind = FileKind::Iommufd;
                names = 5;
            } else if (w[3] == "fault" && w.size() == 8) {
                f.kind = FileKind::Fault;
                const auto id = parseNumber<uint32_t>(w[5]);
                if (!id || *id == 0) {
                    return bad("bad fault queue id");
                }
                f.faultId = *id;
                names = 6;
            } else if (w[3] == "vfio" && w.size() == 6) {
                f.kind = FileKind::Vfio;
            } else if (w[3] == "vhost-vdpa" && w.size() == 6) {
                f.kind = FileKind::VhostVdpa;
            } else if (w[3] == "wq" && w.size() == 6) {
                f.kind = FileKind::WorkQueue;
            } else {
                return bad("bad file kind");
            }
            if (names > 4) {
                const auto ctx = parseNumber<uint32_t>(w[4]);
                if (!ctx || !out.contexts.count(*ctx)) {
                    return bad("no such context");
                }
                f.ctx = *ctx;
            }
            auto memfdName = decodeName(w[names]);
            auto label = decodeName(w[names + 1]);
            if (!memfdName || !label || memfdName->empty() || memfdName->size() > kMemfdNameMax) {
                return bad("bad name");
            }
            f.memfdName = std::move(*memfdName);
            f.label = std::move(*label);
            if (!out.files.emplace(*k, std::move(f)).second) {
                return bad("file twice");
            }
        } else if ((tag == "bound" && w.size() == 5) || (tag == "rid" && w.size() == 4) ||
                   (tag == "pasid" && w.size() == 5)) {
            const auto k = fileKey(1);
            auto f = k ? out.files.find(*k) : out.files.end();
            if (f == out.files.end() || f->second.kind != FileKind::Vfio) {
                return bad("no such VFIO file");
            }
            const auto a = parseNumber<uint32_t>(w[3]);
            const auto b = w.size() == 5 ? parseNumber<uint32_t>(w[4]) : std::optional<uint32_t>(0);
            if (!a || !b) {
                return bad("bad number");
            }
            std::optional<Binding>& binding = f->second.binding;
            if (tag == "bound") {
                if (binding || unboundDevices.erase({*a, *b}) == 0) {
                    return bad("bound twice, or no unbound device object " + std::to_string(*b));
                }
                Object& o = out.contexts.at(*a).objects.at(*b);
                o.file = *k;
                o.device = f->second.label;
                binding = Binding{*a, *b, std::nullopt, {}};
                continue;
            }
            if (!binding) {
                return bad("not bound");
            }
            const uint32_t ioasId = tag == "rid" ? *a : *b;
            Object* ioas = ioasOf(binding->ctx, ioasId);
            if (!ioas) {
                return bad("no IOAS " + std::to_string(ioasId));
            }
            if (tag == "rid") {
                if (binding->ridIoas) {
                    return bad("attached twice");
                }
                binding->ridIoas = ioasId;
            } else if (*a == 0 || !binding->pasidIoas.emplace(*a, ioasId).second) {
                return bad("bad or repeated PASID");
            }
            ++ioas->attachments;
        } else {
            return bad("unknown line");
        }
    }
    if (!ended) {
        return bad("truncated: no \"end\"");
    }
    if (!unboundDevices.empty()) {
        error = "device object " + std::to_string(unboundDevices.begin()->second) + " of context " +
                std::to_string(unboundDevices.begin()->first) + " has no binding";
        return false;
    }
    return true;
}

void KernelSim::saveIfChangedLocked() noexcept {
    if (persistPath_.empty()) {
        return;
    }
    try {
        std::string state = serializeLocked();
        if (state == savedState_) {
            return;
        }
        saveError_ = replaceFile(persistPath_, state);
        if (saveError_.empty()) {
            savedState_ = std::move(state);
        }
    } catch (const std::exception&) {
        // Out of memory: savedState_ is unchanged, so the next change tries again.
    }
}

bool KernelSim::persistIn(const std::string& path) {
    Locked lock(*this); // writes the state, loaded or not, when done
    persistPath_ = path;
    savedState_.clear();
    loadError_.clear();
    const auto text = readWholeFile(path, loadError_);
    if (!text) {
        return loadError_.empty();
    }
    State state;
    if (!parseState(*text, state, loadError_)) {
        return false;
    }
    files_ = std::move(state.files);
    contexts_ = std::move(state.contexts);
    nextInstance_ = state.nextInstance;
    sweepAt_ = std::max(kMinSweep, 2 * files_.size());
    // The files this process no longer holds were closed while no svad ran.
    sweepLocked(true);
    return true;
}

std::string KernelSim::lastLoadError() const {
    std::lock_guard lock(mu_);
    return loadError_;
}

std::string KernelSim::lastSaveError() const {
    std::lock_guard lock(mu_);
    return saveError_;
}

} // namespace svad::sim
