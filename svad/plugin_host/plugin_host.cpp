#include "svad/plugin_host/plugin_host.h"

#include "svad/core/log.h"
#include "svad/core/thread_name.h"
#include "svad/names.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <svad/plugin.h>
#include <sys/stat.h>
#include <unistd.h>

namespace svad::plugin_host {

namespace {

constexpr size_t kTextSize = 512;
// The part of struct svad_plugin every ABI has (version 1).
constexpr size_t kPluginV1Size = offsetof(svad_plugin, fini) + sizeof(svad_plugin::fini);

void putText(char* buf, size_t size, const std::string& text) {
    if (buf != nullptr && size > 0) {
        (void)std::snprintf(buf, size, "%s", text.c_str());
    }
}

// What a plugin wrote into a buffer: up to the first NUL, at most the buffer.
std::string takeText(const char* buf, size_t size) {
    std::string s(buf, strnlen(buf, size));
    return s;
}

bool validPluginName(const char* name) {
    if (name == nullptr) {
        return false;
    }
    size_t n = strnlen(name, 65);
    if (n == 0 || n > 64) {
        return false;
    }
    return std::all_of(name, name + n, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_';
    });
}

std::vector<std::string> kindNames(uint32_t kinds) {
    std::vector<std::string> out;
    if ((kinds & SVAD_KIND_PCI) != 0) {
        out.emplace_back("pci");
    }
    if ((kinds & SVAD_KIND_VDPA) != 0) {
        out.emplace_back("vdpa");
    }
    if ((kinds & SVAD_KIND_QUEUE) != 0) {
        out.emplace_back("queue");
    }
    return out;
}

// Owned by root or by svad's own user, and writable by neither group nor others.
std::optional<std::string> unsafeOwnership(const struct stat& st) {
    if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
        return "is owned by uid " + std::to_string(st.st_uid) + ", not by root";
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        char mode[8];
        (void)std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return std::string("is writable by ") +
               ((st.st_mode & S_IWOTH) != 0 ? "others" : "its group") + " (mode " + mode + ")";
    }
    return std::nullopt;
}

// The C view of one PolicyQuery; the strings live as long as this object.
class CQuery {
public:
    explicit CQuery(const core::PolicyQuery& q) : vm_(q.vm), id_(q.deviceId), rule_(q.rule) {
        dev_.struct_size = sizeof dev_;
        dev_.kind = static_cast<uint32_t>(q.kind);
        dev_.iommu_group = -1;
        dev_.group_viable = -1;
        const core::PciDevice* ids = q.pci != nullptr ? q.pci : q.parent;
        if (ids != nullptr) {
            dev_.vendor = ids->vendor;
            dev_.device = ids->device;
            dev_.class_code = ids->classCode;
        }
        if (q.pci != nullptr) {
            driver_ = q.pci->driver;
            vfio_ = q.pci->vfioDevice;
            physfn_ = q.pci->physfn;
        }
        if (q.group != nullptr) {
            dev_.iommu_group = static_cast<int32_t>(q.group->id);
            dev_.group_viable = q.group->viable ? 1 : 0;
            for (const auto& b : q.group->blockers) {
                blockers_ += (blockers_.empty() ? "" : "; ") + core::blockerText(b);
                blockerDevices_.push_back(b.device);
            }
            members_ = q.group->devices;
        }
        if (q.vdpa != nullptr) {
            driver_ = q.vdpa->driver;
            vhost_ = q.vdpa->vhostDevice;
            parent_ = q.vdpa->parentDevice;
        }
        if (q.queue != nullptr) {
            parent_ = q.queue->parentDevice;
            queueNode_ = q.queue->charDevice;
            dev_.queue_mode = static_cast<uint32_t>(q.queue->mode);
            dev_.queue_type = static_cast<uint32_t>(q.queue->type);
            dev_.queue_state = static_cast<uint32_t>(q.queue->state);
        }
        dev_.id = id_.c_str();
        dev_.driver = driver_.c_str();
        dev_.group_blockers = blockers_.c_str();
        dev_.vfio_node = vfio_.c_str();
        dev_.physfn = physfn_.c_str();
        dev_.pasid_width = q.pasidWidth;
        dev_.vhost_node = vhost_.c_str();
        dev_.parent = parent_.c_str();
        dev_.queue_node = queueNode_.c_str();
        dev_.holders = q.holders;
        if (q.group != nullptr) {
            for (const auto& m : members_) {
                memberPtrs_.push_back(m.c_str());
            }
            memberPtrs_.push_back(nullptr);
            dev_.iommu_group_members = memberPtrs_.data();
            for (const auto& b : blockerDevices_) {
                blockerPtrs_.push_back(b.c_str());
            }
            blockerPtrs_.push_back(nullptr);
            dev_.group_blocker_devices = blockerPtrs_.data();
        }
        for (const auto& [k, v] : q.options) {
            optionText_.emplace_back(k, v);
        }
        for (const auto& [k, v] : optionText_) {
            options_.push_back(svad_option{k.c_str(), v.c_str()});
        }
        req_.struct_size = sizeof req_;
        req_.mode = static_cast<uint32_t>(q.mode);
        req_.vm = vm_.c_str();
        req_.caller_uid = q.uid;
        req_.caller_pid = q.pid;
        req_.rule = rule_.c_str();
        req_.device = &dev_;
        req_.options = options_.empty() ? nullptr : options_.data();
        req_.option_count = options_.size();
    }
    CQuery(const CQuery&) = delete;
    CQuery& operator=(const CQuery&) = delete;

    const svad_request* request() const { return &req_; }

private:
    std::string vm_, id_, rule_, driver_, blockers_, vfio_, physfn_, vhost_, parent_, queueNode_;
    std::vector<std::string> members_;
    std::vector<const char*> memberPtrs_;
    std::vector<std::string> blockerDevices_;
    std::vector<const char*> blockerPtrs_;
    std::vector<std::pair<std::string, std::string>> optionText_;
    std::vector<svad_option> options_;
    svad_device dev_{};
    svad_request req_{};
};

// The fds the host table opened during the prepare running on this thread:
// prepares may run on several threads at once.
thread_local std::vector<int>* tHandedOut = nullptr;
// The context a prepare on this thread is building (its auto_bind records name it).
thread_local uint64_t tContext = 0;

PluginHost* hostOf(void* handle) {
    return static_cast<PluginHost*>(handle);
}

int openResult(void* handle, ports::Result<ports::UniqueFd> r, char* err, size_t errSize);

int openResult(void* handle, ports::Result<ports::UniqueFd> r, char* err, size_t errSize) {
    if (!r) {
        putText(err, errSize, r.error().message);
        return -(r.error().err != 0 ? r.error().err : EIO);
    }
    (void)handle;
    int fd = r.value().release();
    PluginHost::handedOut(fd);
    return fd;
}

// Runs a host function for a plugin: no C++ exception may cross into its frames.
template <typename F> int guarded(char* err, size_t errSize, F&& f) noexcept {
    try {
        return f();
    } catch (const std::exception& e) {
        putText(err, errSize, std::string("svad failed: ") + e.what());
    } catch (...) {
        putText(err, errSize, "svad failed");
    }
    return -EIO;
}

int countResult(ports::Result<uint32_t> r, uint32_t* out, char* err, size_t errSize) {
    if (!r) {
        putText(err, errSize, r.error().message);
        return -(r.error().err != 0 ? r.error().err : EIO);
    }
    if (out != nullptr) {
        *out = r.value();
    }
    return 0;
}

bool badArg(const char* s, char* err, size_t errSize, const char* what) {
    if (s == nullptr) {
        putText(err, errSize, std::string(what) + " is NULL");
        return true;
    }
    return false;
}

// ---- the host table's functions ----

void hostLog(void* handle, int priority, const char* plugin, const char* message) {
    (void)handle;
    auto p = static_cast<log::Priority>(std::clamp(priority, 3, 7));
    log::write(p, message != nullptr ? message : "",
               {{"PLUGIN", plugin != nullptr ? plugin : "?"}});
}

int hostOpenVfio(void* handle, const char* node, char* err, size_t errSize) {
    if (badArg(node, err, errSize, "vfio_node")) {
        return -EINVAL;
    }
    return guarded(err, errSize, [&] {
        return openResult(handle, hostOf(handle)->kernel().openVfioDevice(node), err, errSize);
    });
}

int hostOpenVhostVdpa(void* handle, const char* node, char* err, size_t errSize) {
    if (badArg(node, err, errSize, "vhost_node")) {
        return -EINVAL;
    }
    return guarded(err, errSize, [&] {
        return openResult(handle, hostOf(handle)->kernel().openVhostVdpa(node), err, errSize);
    });
}

int hostVdpaGroupNum(void* handle, int fd, uint32_t* out, char* err, size_t errSize) {
    return guarded(err, errSize, [&] {
        return countResult(hostOf(handle)->kernel().vdpaGroupNum(fd), out, err, errSize);
    });
}

int hostVdpaAsNum(void* handle, int fd, uint32_t* out, char* err, size_t errSize) {
    return guarded(err, errSize, [&] {
        return countResult(hostOf(handle)->kernel().vdpaAsNum(fd), out, err, errSize);
    });
}

// Refused since ABI 4: the kernel binds a work queue to the address space of
// the process that opens it (drivers/dma/idxd/cdev.c: idxd_cdev_open binds
// current->mm, idxd_cdev_mmap refuses any other mm with -EPERM), so a queue
// svad opened is useless to the client. svad grants the owner the node.
int hostOpenWorkQueue(void* /*handle*/, const char* queue, char* err, size_t errSize) {
    putText(err, errSize,
            std::string("svad does not open work queue ") + (queue != nullptr ? queue : "(null)") +
                ": the kernel binds a queue to the address space of the process that opens it, "
                "so the client opens the node svad grants its owner (plugin ABI 4: prepare "
                "leaves the fd at -1)");
    return -EOPNOTSUPP;
}

int hostBindDriver(void* handle, const char* address, const char* driver, char* previous,
                   size_t previousSize, char* err, size_t errSize) {
    if (badArg(address, err, errSize, "address") || badArg(driver, err, errSize, "driver")) {
        return -EINVAL;
    }
    return guarded(err, errSize, [&] {
        auto r = hostOf(handle)->bindRecorded(address, driver);
        if (!r) {
            putText(err, errSize, r.error().message);
            return -(r.error().err != 0 ? r.error().err : EIO);
        }
        putText(previous, previousSize, r.value());
        return 0;
    });
}

int hostRestoreDriver(void* handle, const char* address, const char* previous, char* err,
                      size_t errSize) {
    if (badArg(address, err, errSize, "address")) {
        return -EINVAL;
    }
    return guarded(err, errSize, [&] {
        auto r = hostOf(handle)->restoreRecorded(address, previous != nullptr ? previous : "");
        if (!r) {
            putText(err, errSize, r.error().message);
            return -(r.error().err != 0 ? r.error().err : EIO);
        }
        return 0;
    });
}

int hostVfioNode(void* handle, const char* address, char* node, size_t nodeSize, char* err,
                 size_t errSize) {
    if (badArg(address, err, errSize, "address")) {
        return -EINVAL;
    }
    return guarded(err, errSize, [&] {
        auto r = hostOf(handle)->binder().vfioNode(address);
        if (!r) {
            putText(err, errSize, r.error().message);
            return -(r.error().err != 0 ? r.error().err : EIO);
        }
        if (r.value().size() + 1 > nodeSize) {
            putText(err, errSize, "buffer too small for " + r.value());
            return -ERANGE;
        }
        putText(node, nodeSize, r.value());
        return 0;
    });
}

} // namespace

struct PluginHost::Loaded {
    void* handle = nullptr;
    // The checked file, open while the plugin is loaded: its /proc/self/fd/N name
    // stays unique, so the dynamic linker never takes it for another plugin.
    int fd = -1;
    svad_plugin table{};
    PluginInfo info;

    bool has(size_t offsetEnd) const { return table.struct_size >= offsetEnd; }
    bool hasConfigure() const {
        return has(offsetof(svad_plugin, configure) + sizeof table.configure) &&
               table.configure != nullptr;
    }
    ~Loaded() {
        if (table.fini != nullptr) {
            try {
                table.fini(table.state);
            } catch (...) { // NOLINT(bugprone-empty-catch): unloading goes on
            }
        }
        if (handle != nullptr) {
            ::dlclose(handle);
        }
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

PluginHost::PluginHost(ports::Kernel& kernel, ports::DriverBinder& binder)
    : kernel_(kernel), binder_(binder), host_(std::make_unique<svad_host>()) {
    *host_ = svad_host{};
    host_->struct_size = sizeof(svad_host);
    host_->handle = this;
    host_->log = hostLog;
    host_->open_vfio_device = hostOpenVfio;
    host_->open_vhost_vdpa = hostOpenVhostVdpa;
    host_->vdpa_group_num = hostVdpaGroupNum;
    host_->vdpa_as_num = hostVdpaAsNum;
    host_->open_work_queue = hostOpenWorkQueue;
    host_->bind_driver = hostBindDriver;
    host_->restore_driver = hostRestoreDriver;
    host_->vfio_node = hostVfioNode;
    releaser_ = std::thread([this] { releaseLoop(); });
    core::nameThread(releaser_.native_handle(), "svad-plugin-rel");
}

PluginHost::~PluginHost() {
    {
        std::lock_guard lock(queueMutex_);
        stopping_ = true;
    }
    queueCv_.notify_all();
    releaser_.join();
    // Unload in reverse order of loading.
    while (!loaded_.empty()) {
        loaded_.pop_back();
    }
}

void PluginHost::setOnReleased(std::function<void(uint64_t)> f) {
    std::lock_guard lock(queueMutex_);
    onReleased_ = std::move(f);
}

void PluginHost::rescanned(uint64_t change) {
    std::lock_guard lock(queueMutex_);
    for (auto it = awaiting_.begin(); it != awaiting_.end();) {
        it = it->second <= change ? awaiting_.erase(it) : std::next(it);
    }
}

uint64_t PluginHost::hostChanges() const {
    std::lock_guard lock(queueMutex_);
    return changes_;
}

void PluginHost::handedOut(int fd) {
    if (tHandedOut != nullptr) {
        tHandedOut->push_back(fd);
    }
}

void PluginHost::drainReleases() {
    std::unique_lock lock(queueMutex_);
    const uint64_t target = queued_;
    queueCv_.wait(lock, [this, target] { return finished_ >= target || stopping_; });
}

void PluginHost::releaseLoop() {
    for (;;) {
        PendingRelease job;
        {
            std::unique_lock lock(queueMutex_);
            queueCv_.wait(lock, [this] { return stopping_ || !releases_.empty(); });
            if (stopping_) {
                // svad is stopping: what is left stays as it is (a VMM may still use it).
                for (const auto& left : releases_) {
                    log::warning("stopping before " + left.query.deviceId +
                                     " was given back to its driver",
                                 {{"PLUGIN", left.plugin}, {"DEVICE", left.query.deviceId}});
                }
                releases_.clear();
                releasing_.clear();
                queueCv_.notify_all();
                return;
            }
            job = std::move(releases_.front());
            releases_.pop_front();
        }
        // No lock here: a release may block (restore_driver) for as long as a
        // VMM keeps its fds, and decide and prepare go on meanwhile.
        std::vector<std::string> changed;
        if (job.giveBack != 0) {
            changed = giveBackNow(job.giveBack);
            job.query.hostChanged = !changed.empty();
            if (job.query.hostChanged) {
                changed.insert(changed.end(), job.devices.begin(), job.devices.end());
            }
        } else if (Loaded* l = find(job.plugin); l != nullptr && l->table.release != nullptr) {
            CQuery c(job.query);
            try {
                l->table.release(l->table.state, host_.get(), c.request());
            } catch (...) {
                log::error("plugin " + job.plugin + " threw from release",
                           {{"PLUGIN", job.plugin}, {"DEVICE", job.query.deviceId}});
            }
        }
        std::function<void(uint64_t)> done;
        uint64_t change = 0;
        {
            std::lock_guard lock(queueMutex_);
            if (auto it = releasing_.find(job.query.deviceId);
                job.query.hostChanged && it != releasing_.end()) {
                releasing_.erase(it);
            }
            ++finished_;
            if (job.query.hostChanged) {
                // Refused on until svad has read the host again.
                change = ++changes_;
                if (job.giveBack == 0) {
                    changed.push_back(job.query.deviceId);
                }
                for (const auto& id : changed) {
                    awaiting_[id] = change;
                }
                done = onReleased_;
            }
        }
        queueCv_.notify_all();
        if (done) {
            done(change);
        }
    }
}

void PluginHost::refuse(const std::string& path, const std::string& reason) {
    log::warning("plugin refused: " + path + " " + reason, {{"PLUGIN_FILE", path}});
    refusals_.push_back(Refusal{path, reason});
}

void PluginHost::loadDirectory(const std::string& dir) {
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        refuse(dir, std::string("cannot be opened: ") + std::strerror(errno) +
                        " (no plugins: every request is denied)");
        return;
    }
    struct stat st {};
    if (::fstat(dfd, &st) != 0) {
        ::close(dfd);
        refuse(dir, std::string("cannot be read: ") + std::strerror(errno));
        return;
    }
    if (auto why = unsafeOwnership(st)) {
        ::close(dfd);
        refuse(dir, "(the plugin directory) " + *why + ": no plugin loaded from it");
        return;
    }
    if (auto why = unsafeDirectory(dir)) {
        ::close(dfd);
        refuse(dir, *why + ": no plugin loaded from it");
        return;
    }
    DIR* d = ::fdopendir(dfd);
    if (d == nullptr) {
        ::close(dfd);
        refuse(dir, std::string("cannot be listed: ") + std::strerror(errno));
        return;
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 3 && n.compare(n.size() - 3, 3, ".so") == 0) {
            names.push_back(n);
        }
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        (void)loadFile(std::string(dir).append("/").append(n));
    }
}

// Every directory above the plugin directory must be root's (or svad's user's),
// and writable by group or others only when sticky (as /tmp is): otherwise
// someone else could swap the plugin directory itself.
std::optional<std::string> PluginHost::unsafeDirectory(const std::string& dir) const {
    std::string path = dir;
    while (path.size() > 1 && path.back() == '/') {
        path.pop_back();
    }
    for (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0;
         slash = path.rfind('/')) {
        path.resize(slash);
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            return "its parent " + path + " cannot be read";
        }
        if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
            return "its parent " + path + " is owned by uid " + std::to_string(st.st_uid);
        }
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
            return "its parent " + path + " is writable by others and not sticky";
        }
    }
    return std::nullopt;
}

std::optional<std::string> PluginHost::loadFile(const std::string& path) {
    auto refused = [this, &path](const std::string& why) -> std::optional<std::string> {
        refuse(path, why);
        return why;
    };
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return refused(errno == ELOOP ? std::string("is a symbolic link")
                                      : std::string("cannot be opened: ") + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return refused("is not a regular file");
    }
    if (auto why = unsafeOwnership(st)) {
        ::close(fd);
        return refused(*why);
    }
    // The file loaded is the one checked: dlopen goes through the fd the checks
    // ran on (/proc/self/fd/N names that very inode), so nothing swapped in under
    // the same name meanwhile can be loaded instead. The dynamic linker knows a
    // library by the name it was opened under, and one it cannot unload (C++
    // unique symbols) stays known after dlclose: each load takes an fd number
    // never used for a plugin before, so no name is ever taken for another.
    static std::atomic<int> nextFd{100};
    const int unique = ::fcntl(fd, F_DUPFD_CLOEXEC, nextFd.load());
    ::close(fd);
    if (unique < 0) {
        return refused(std::string("cannot be loaded: no fd for it: ") + std::strerror(errno));
    }
    nextFd = unique + 1;
    fd = unique;
    const std::string viaFd = "/proc/self/fd/" + std::to_string(fd);
    struct stat proc {};
    if (::stat(viaFd.c_str(), &proc) != 0 || proc.st_ino != st.st_ino || proc.st_dev != st.st_dev) {
        ::close(fd);
        return refused("cannot be loaded through its fd (is /proc mounted?)");
    }
    void* handle = ::dlopen(viaFd.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        ::close(fd);
        const char* e = ::dlerror();
        return refused(std::string("cannot be loaded: ") + (e != nullptr ? e : "dlopen failed"));
    }
    auto loaded = std::make_unique<Loaded>();
    loaded->handle = handle;
    loaded->fd = fd;
    loaded->info.path = path;
    auto init = reinterpret_cast<svad_plugin_init_fn>(::dlsym(handle, SVAD_PLUGIN_INIT_SYMBOL));
    if (init == nullptr) {
        return refused("does not export " SVAD_PLUGIN_INIT_SYMBOL);
    }
    svad_plugin& t = loaded->table;
    int rc = -EIO;
    try {
        rc = init(SVAD_PLUGIN_ABI_VERSION, &t, sizeof t);
    } catch (...) {
        rc = -EIO;
    }
    auto notInitialized = [&loaded] { loaded->table.fini = nullptr; };
    if (rc != 0) {
        notInitialized();
        return refused(std::string(SVAD_PLUGIN_INIT_SYMBOL) +
                       " failed: " + std::strerror(rc < 0 ? -rc : rc));
    }
    if (t.abi_version == 0 || t.abi_version > SVAD_PLUGIN_ABI_VERSION) {
        notInitialized();
        return refused("speaks plugin ABI " + std::to_string(t.abi_version) +
                       "; this svad knows 1 to " + std::to_string(SVAD_PLUGIN_ABI_VERSION));
    }
    if (t.struct_size < kPluginV1Size || t.struct_size > sizeof t) {
        notInitialized();
        return refused("declares a struct svad_plugin of " + std::to_string(t.struct_size) +
                       " bytes; ABI " + std::to_string(t.abi_version) + " needs " +
                       std::to_string(kPluginV1Size) + " to " + std::to_string(sizeof t));
    }
    if (!validPluginName(t.name)) {
        return refused("has no valid name (1 to 64 of letters, digits, - and _)");
    }
    if (t.decide == nullptr || t.prepare == nullptr) {
        return refused(std::string("plugin '") + t.name + "' leaves out " +
                       (t.decide == nullptr ? "decide" : "prepare") + ", which is required");
    }
    if (t.kinds == 0 ||
        (t.kinds & ~uint32_t{SVAD_KIND_PCI | SVAD_KIND_VDPA | SVAD_KIND_QUEUE}) != 0) {
        return refused(std::string("plugin '") + t.name + "' declares unknown device kinds " +
                       std::to_string(t.kinds));
    }
    if (find(t.name) != nullptr) {
        return refused(std::string("plugin '") + t.name + "' is already loaded from " +
                       find(t.name)->info.path);
    }
    loaded->info.name = t.name;
    loaded->info.abi = t.abi_version;
    loaded->info.kinds = kindNames(t.kinds);
    if (loaded->has(offsetof(svad_plugin, version) + sizeof t.version) && t.version != nullptr) {
        loaded->info.version = takeText(t.version, 64);
    }
    log::info("plugin loaded: " + loaded->info.name + " from " + path,
              {{"PLUGIN", loaded->info.name}, {"PLUGIN_ABI", std::to_string(t.abi_version)}});
    loaded_.push_back(std::move(loaded));
    return std::nullopt;
}

PluginHost::Loaded* PluginHost::find(const std::string& name) {
    for (auto& l : loaded_) {
        if (l->info.name == name) {
            return l.get();
        }
    }
    return nullptr;
}

std::vector<PluginInfo> PluginHost::plugins() const {
    std::vector<PluginInfo> out;
    out.reserve(loaded_.size());
    for (const auto& l : loaded_) {
        out.push_back(l->info);
    }
    return out;
}

std::vector<std::string> PluginHost::configure(const core::Config& config,
                                               const core::Config* previous) {
    std::lock_guard sequence(configureMutex_);
    auto apply = [this](const core::Config& c) {
        std::vector<std::string> errors;
        for (auto& l : loaded_) {
            std::vector<std::pair<std::string, std::string>> opts;
            if (auto it = c.pluginOptions.find(l->info.name); it != c.pluginOptions.end()) {
                opts = it->second;
            }
            if (!l->hasConfigure()) {
                if (!opts.empty()) {
                    errors.push_back("plugins." + l->info.name + ": plugin '" + l->info.name +
                                     "' takes no settings");
                }
                continue;
            }
            std::vector<svad_option> copts;
            copts.reserve(opts.size());
            for (const auto& [k, v] : opts) {
                copts.push_back(svad_option{k.c_str(), v.c_str()});
            }
            char err[kTextSize] = {};
            int rc = -EINVAL;
            try {
                rc = l->table.configure(l->table.state, copts.empty() ? nullptr : copts.data(),
                                        copts.size(), err, sizeof err);
            } catch (...) {
                putText(err, sizeof err, "threw an exception");
            }
            if (rc != 0) {
                errors.push_back("plugins." + l->info.name + ": " + takeText(err, sizeof err));
            }
        }
        for (const auto& [name, opts] : c.pluginOptions) {
            if (find(name) == nullptr) {
                log::warning("configuration has settings for plugin '" + name +
                                 "', which is not loaded",
                             {{"PLUGIN", name}});
            }
        }
        return errors;
    };
    auto errors = apply(config);
    if (!errors.empty() && previous != nullptr) {
        for (const auto& e : apply(*previous)) {
            log::error("plugin settings could not be restored: " + e);
        }
    }
    return errors;
}

core::PolicyDecision PluginHost::decide(const core::PolicyQuery& query) {
    core::PolicyDecision d;
    {
        std::lock_guard lock(queueMutex_);
        if (releasing_.count(query.deviceId) != 0 || awaiting_.count(query.deviceId) != 0) {
            d.plugin = "svad";
            d.reason = query.deviceId + " is being given back to its driver; try again";
            d.verdicts.push_back(core::PluginVerdict{"svad", core::Verdict::Deny, d.reason});
            return d;
        }
    }
    CQuery c(query);
    const auto bit = static_cast<uint32_t>(query.kind);
    std::string firstAllow;
    std::string firstAllowReason;
    std::string asked;
    for (auto& l : loaded_) {
        if ((l->table.kinds & bit) == 0) {
            continue;
        }
        char reason[kTextSize] = {};
        int v = -1;
        try {
            v = l->table.decide(l->table.state, c.request(), reason, sizeof reason);
        } catch (...) {
            putText(reason, sizeof reason, "threw an exception");
            v = SVAD_DENY;
        }
        core::PluginVerdict pv;
        pv.plugin = l->info.name;
        pv.reason = takeText(reason, sizeof reason);
        if (v == SVAD_ALLOW || v == SVAD_DENY || v == SVAD_IGNORE) {
            pv.verdict = static_cast<core::Verdict>(v);
        } else {
            pv.verdict = core::Verdict::Deny;
            pv.reason = "answered an unknown verdict " + std::to_string(v);
        }
        if (pv.reason.empty()) {
            pv.reason = "(no reason given)";
        }
        asked += (asked.empty() ? "" : ", ") + pv.plugin;
        if (pv.verdict == core::Verdict::Deny && d.plugin.empty()) {
            d.plugin = pv.plugin;
            d.reason = "plugin " + pv.plugin + " denies: " + pv.reason;
        }
        if (pv.verdict == core::Verdict::Allow && firstAllow.empty()) {
            firstAllow = pv.plugin;
            firstAllowReason = pv.reason;
        }
        d.verdicts.push_back(std::move(pv));
    }
    if (!d.plugin.empty()) {
        d.allowed = false;
    } else if (!firstAllow.empty()) {
        d.allowed = true;
        d.plugin = firstAllow;
        d.reason = "plugin " + firstAllow + " allows: " + firstAllowReason;
    } else {
        d.allowed = false;
        d.reason = asked.empty() ? std::string("no loaded plugin handles ") +
                                       core::toString(query.kind) + " devices"
                                 : "no plugin allows it (asked: " + asked + ")";
    }
    return d;
}

core::Outcome<core::PreparedDevice> PluginHost::prepare(const std::string& plugin,
                                                        const core::PolicyQuery& query) {
    Loaded* l = find(plugin);
    if (l == nullptr) {
        return core::Failure{names::Error::NotSupported, "plugin " + plugin + " is not loaded", {}};
    }
    const bool queue = query.kind == core::DeviceKind::Queue;
    if (queue && l->info.abi < 4) {
        // Before ABI 4 a queue's prepare opened the queue, which svad no longer
        // hands out (hostOpenWorkQueue): nothing is left for it to do.
        log::info("plugin " + plugin + " speaks plugin ABI " + std::to_string(l->info.abi) +
                      ": its prepare is not called for a work queue (svad grants the owner the "
                      "queue's node)",
                  {{"PLUGIN", plugin}, {"DEVICE", query.deviceId}});
        return core::PreparedDevice{};
    }
    CQuery c(query);
    svad_prepared out{};
    out.struct_size = sizeof out;
    out.fd = -1;
    char err[kTextSize] = {};
    // The fds the host table opens for the plugin during this call: it may hand
    // back one of them, and the others are closed.
    std::vector<int> opened;
    tHandedOut = &opened;
    tContext = query.context;
    int rc = -EIO;
    try {
        rc = l->table.prepare(l->table.state, host_.get(), c.request(), &out, err, sizeof err);
    } catch (...) {
        putText(err, sizeof err, "threw an exception");
        rc = -EIO;
    }
    tHandedOut = nullptr;
    tContext = 0;
    ports::UniqueFd fd;
    for (int o : opened) {
        if (rc == 0 && !queue && o == out.fd && !fd.valid()) {
            fd.reset(o);
        } else {
            ::close(o);
        }
    }
    if (rc != 0) {
        const names::Error name = names::errorFromErrno(rc < 0 ? -rc : EIO);
        return core::Failure{name,
                             "plugin " + plugin + " could not prepare " + query.deviceId + ": " +
                                 takeText(err, sizeof err),
                             {}};
    }
    if (queue && out.fd != -1) {
        return core::Failure{names::Error::KernelError,
                             "plugin " + plugin + " prepared work queue " + query.deviceId +
                                 " and handed back fd " + std::to_string(out.fd) +
                                 "; since plugin ABI 4 a queue's prepare opens nothing and "
                                 "leaves the fd at -1",
                             {}};
    }
    if (!fd.valid() && !queue) {
        return core::Failure{names::Error::KernelError,
                             "plugin " + plugin + " prepared " + query.deviceId +
                                 " but handed back fd " + std::to_string(out.fd) +
                                 ", which the host did not open for it in that call",
                             {}};
    }
    core::PreparedDevice p;
    p.fd = std::move(fd);
    p.vdpaGroups = out.vdpa_groups;
    p.vdpaAddressSpaces = out.vdpa_address_spaces;
    p.hostChanged = out.host_changed != 0;
    return p;
}

void PluginHost::giveBack(uint64_t context, const std::vector<std::string>& devices) {
    if (store_ == nullptr || context == 0) {
        return;
    }
    PendingRelease job{"", {}, context, devices};
    job.query.deviceId = "context " + std::to_string(context);
    {
        std::lock_guard lock(queueMutex_);
        releases_.push_back(std::move(job));
        ++queued_;
    }
    queueCv_.notify_all();
}

std::optional<ports::AutoBindRecord> PluginHost::recordOf(const std::string& address) {
    for (auto& r : store_->autoBinds()) {
        if (r.address == address) {
            return r;
        }
    }
    return std::nullopt;
}

ports::Result<std::string> PluginHost::bindRecorded(const std::string& address,
                                                    const std::string& driver) {
    if (store_ == nullptr) {
        return binder_.bind(address, driver);
    }
    auto before = binder_.state(address);
    if (!before) {
        return before.error();
    }
    if (before.value().driver == driver) {
        return driver; // nothing to change, nothing to give back
    }
    // Recorded first: svad may die between the rebind and anything after it.
    // A record left by an earlier rebind keeps what the function had before it.
    ports::AutoBindRecord record{address, before.value().driver, before.value().override, tContext};
    try {
        if (auto earlier = recordOf(address)) {
            record.previousDriver = earlier->previousDriver;
            record.previousOverride = earlier->previousOverride;
        }
        store_->putAutoBind(record);
    } catch (const ports::StateError& e) {
        return ports::KernelError{EIO, std::string("cannot record the rebind of ") + address +
                                           " in svad's state: " + e.what()};
    }
    auto r = binder_.bind(address, driver);
    if (!r) {
        // Nothing changed: no record. Something did: the record stays, and the
        // function goes back with the context's give-back.
        auto after = binder_.state(address);
        if (after && after.value().driver == before.value().driver &&
            after.value().override == before.value().override) {
            try {
                store_->removeAutoBind(address);
            } catch (const ports::StateError& e) {
                log::warning(std::string("auto_bind record left behind: ") + e.what(),
                             {{"DEVICE", address}});
            }
        }
    }
    return r;
}

ports::Status PluginHost::restoreRecorded(const std::string& address, const std::string& previous) {
    if (store_ == nullptr) {
        return binder_.restore(address, previous, "");
    }
    std::optional<ports::AutoBindRecord> record;
    try {
        record = recordOf(address);
    } catch (const ports::StateError& e) {
        log::warning(std::string("cannot read the auto_bind record: ") + e.what(),
                     {{"DEVICE", address}});
    }
    auto r = binder_.restore(address, previous, record ? record->previousOverride : "");
    if (r && record) {
        try {
            store_->removeAutoBind(address);
        } catch (const ports::StateError& e) {
            log::warning(std::string("auto_bind record left behind: ") + e.what(),
                         {{"DEVICE", address}});
        }
    }
    return r;
}

std::vector<std::string> PluginHost::giveBackNow(uint64_t context) {
    std::vector<ports::AutoBindRecord> mine;
    try {
        for (auto& r : store_->autoBinds()) {
            if (r.context == context) {
                mine.push_back(std::move(r));
            }
        }
    } catch (const ports::StateError& e) {
        log::error(std::string("cannot read the auto_bind records: ") + e.what(),
                   {{"CONTEXT", std::to_string(context)}});
        return {};
    }
    std::vector<std::string> given;
    for (const auto& r : mine) {
        const std::string to = r.previousDriver.empty() ? "no driver" : r.previousDriver;
        auto restored = binder_.restore(r.address, r.previousDriver, r.previousOverride);
        if (!restored) {
            log::warning("auto_bind: could not give " + r.address + " back to " + to + ": " +
                             restored.error().message,
                         {{"DEVICE", r.address}, {"CONTEXT", std::to_string(context)}});
            continue;
        }
        given.push_back(r.address);
        try {
            store_->removeAutoBind(r.address);
        } catch (const ports::StateError& e) {
            log::warning(std::string("auto_bind record left behind: ") + e.what(),
                         {{"DEVICE", r.address}});
        }
        log::notice("auto_bind: " + r.address + " given back to " + to + " (context " +
                        std::to_string(context) + " is gone)",
                    {{"DEVICE", r.address}, {"CONTEXT", std::to_string(context)}});
    }
    return given;
}

void PluginHost::release(const std::string& plugin, const core::PolicyQuery& query) {
    // Queued for the release thread, with nothing that points into the host.
    PendingRelease job{plugin, query, 0, {}};
    job.query.pci = nullptr;
    job.query.vdpa = nullptr;
    job.query.queue = nullptr;
    job.query.group = nullptr;
    job.query.parent = nullptr;
    {
        std::lock_guard lock(queueMutex_);
        // Refuse the device meanwhile only when its functions are being rebound.
        if (query.hostChanged) {
            releasing_.insert(query.deviceId);
        }
        releases_.push_back(std::move(job));
        ++queued_;
    }
    queueCv_.notify_all();
}

} // namespace svad::plugin_host
