#include "svad/sim/kernel_sim.h"

#include "svad/core/pasid_width.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
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

uint8_t pasidLog2Of(const core::Host& host, const core::PciDevice* dev) {
    const core::PciDevice* pf = nullptr;
    for (const auto& d : host.devices) {
        if (!dev->physfn.empty() && d.address == dev->physfn) {
            pf = &d;
        }
    }
    return static_cast<uint8_t>(core::pasidWidth(*dev, pf, host.units));
}

} // namespace

uint8_t SimConfig::pasidLog2(const core::Host& host, const std::string& address) {
    for (const auto& d : host.devices) {
        if (d.address == address) {
            return pasidLog2Of(host, &d);
        }
    }
    return 0;
}

SimConfig SimConfig::fromHost(const core::Host& host, const std::string& devRoot) {
    SimConfig c;
    c.devRoot = devRoot;
    for (const auto& d : host.devices) {
        if (!d.vfioDevice.empty()) {
            c.vfio[d.vfioDevice] = pasidLog2Of(host, &d);
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

std::optional<std::set<KernelSim::FileKey>> KernelSim::openKeys() const {
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
        if (files_.count(k)) {
            keys.insert(k);
        }
    }
    ::closedir(dir);
    return keys;
}

void KernelSim::sweepLocked() {
    const auto open = openKeys();
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
    return openNodeLocked(FileKind::Vfio, config_.features.vfioCdev, "vfioCdev",
                          config_.vfio.count(vfioName) != 0, "/vfio/devices/" + vfioName,
                          "svad-sim:vfio:", vfioName);
}

Result<uint32_t> KernelSim::vfioBind(int deviceFd, int iommufd) {
    static const std::string op = "VFIO_DEVICE_BIND_IOMMUFD";
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
    return openNodeLocked(FileKind::VhostVdpa, config_.features.vhostVdpa, "vhostVdpa",
                          config_.vhostVdpa.count(vhostName) != 0, "/" + vhostName,
                          "svad-sim:vhost-vdpa:", vhostName);
}

Result<uint32_t> KernelSim::vdpaGroupNum(int vhostFd) {
    static const std::string op = "VHOST_VDPA_GET_GROUP_NUM";
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
    return openNodeLocked(FileKind::WorkQueue, config_.features.idxd, "idxd",
                          config_.workQueues.count(wqName) != 0, "/dsa/" + wqName,
                          "svad-sim:wq:", wqName);
}

} // namespace svad::sim
