#include "svad/core/engine.h"

#include "svad/core/log.h"
#include "svad/core/text.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <set>
#include <sys/stat.h>

namespace svad::core {

namespace {

Failure fail(names::Error e, std::string message) {
    return Failure{e, std::move(message), {}};
}

// A kernel error as the caller sees it: the errno picks the name, the
// message says which call failed on what.
Failure kernelFailure(const ports::KernelError& e) {
    return Failure{names::errorFromErrno(e.err), e.message, {}};
}

} // namespace

// An admitted request: its devices are reserved under `reservation`, and it
// keeps the host and the configuration it was admitted on.
struct Engine::Ticket {
    uint64_t id = 0; // the context's id, taken at admission
    AllocateRequest request;
    uint64_t nowUsec = 0;
    uint64_t reservation = 0;
    std::shared_ptr<const HostIndex> host;
    std::shared_ptr<const Config> config;
    std::vector<Resolved> resolved;
};

const ContextDevice* Context::device(const std::string& id) const {
    for (const auto& d : devices) {
        if (d.id == id) {
            return &d;
        }
    }
    return nullptr;
}

Engine::Engine(ports::Kernel& kernel, PasidAllocator& pasids, DeviceBroker& broker)
    : kernel_(kernel), pasids_(pasids), broker_(broker), config_(defaultConfig("")),
      host_(std::make_shared<const HostIndex>()) {}

Engine::~Engine() {
    alive_.reset();
    // svad is stopping, not the VMs: make no kernel call (a detach or destroy
    // would pull the devices from under a running VM sharing these open files);
    // svad's copies of the fds close, the VMMs' keep the objects alive.
    for (auto& [id, ctx] : contexts_) {
        for (const auto& [pasid, device] : ctx->pasids) {
            pasids_.release(pasid, ctx->vm);
        }
    }
}

void Engine::addObserver(ContextObserver* observer) {
    observers_.push_back(observer);
}

void Engine::removeObserver(ContextObserver* observer) {
    std::erase(observers_, observer);
}

void Engine::setHost(Host host) {
    (void)setHostIndex(
        std::make_shared<const HostIndex>(std::make_shared<const Host>(std::move(host))));
}

std::shared_ptr<const HostIndex> Engine::setHostIndex(std::shared_ptr<const HostIndex> index) {
    std::shared_ptr<const HostIndex> old = std::move(host_);
    host_ = std::move(index);
    ++hostGeneration_;
    return old;
}

void Engine::setConfig(std::shared_ptr<const Config> config) {
    config_ = std::move(config);
    pasids_.setDefaultQuota(config_->defaultPasidQuota);
}

std::vector<Holder> Engine::holders(const std::string& device) const {
    std::vector<Holder> out;
    if (auto h = held_.find(device); h != held_.end()) {
        for (uint64_t id : h->second) {
            out.push_back(
                Holder{id, contexts_.at(id)->vm,
                       leaving_.count(id) != 0 ? Holder::Stage::Leaving : Holder::Stage::Held});
        }
    }
    if (auto r = reserved_.find(device); r != reserved_.end()) {
        for (uint64_t key : r->second) {
            const Reservation& res = reservations_.at(key);
            out.push_back(Holder{0, res.vm, Holder::Stage::Arriving});
        }
    }
    return out;
}

uint32_t Engine::contextsThroughRule(const std::string& vm, const std::string& rule) const {
    uint32_t n = 0;
    for (const auto& [id, ctx] : contexts_) {
        n +=
            ctx->vm == vm && std::any_of(ctx->devices.begin(), ctx->devices.end(),
                                         [&rule](const ContextDevice& d) { return d.rule == rule; })
                ? 1
                : 0;
    }
    for (const auto& [key, res] : reservations_) {
        n += res.vm == vm && std::any_of(res.devices.begin(), res.devices.end(),
                                         [&rule](const auto& d) { return d.second == rule; })
                 ? 1
                 : 0;
    }
    return n;
}

uint64_t Engine::reserve(Reservation r) {
    const uint64_t key = nextReservation_++;
    for (const auto& [device, rule] : r.devices) {
        reserved_[device].push_back(key);
    }
    reservations_.emplace(key, std::move(r));
    return key;
}

void Engine::unreserve(uint64_t key) {
    auto it = reservations_.find(key);
    if (it == reservations_.end()) {
        return;
    }
    for (const auto& [device, rule] : it->second.devices) {
        auto r = reserved_.find(device);
        if (r != reserved_.end()) {
            std::erase(r->second, key);
            if (r->second.empty()) {
                reserved_.erase(r);
            }
        }
    }
    reservations_.erase(it);
}

Outcome<std::unique_ptr<Engine::Ticket>> Engine::admit(const AllocateRequest& request,
                                                       uint64_t nowUsec) {
    auto admitted = core::admit(request, *host_, *config_, *this);
    if (!admitted.ok()) {
        return admitted.failure();
    }
    auto t = std::make_unique<Ticket>();
    t->request = request;
    t->nowUsec = nowUsec;
    t->host = host_;
    t->config = config_;
    t->resolved = std::move(admitted.value());
    Reservation r{request.vm, {}};
    for (const auto& d : t->resolved) {
        r.devices.emplace_back(d.id, d.rule != nullptr ? d.rule->name : "");
    }
    t->reservation = reserve(std::move(r));
    // The id is taken now, so that what the build records (a rebind for
    // auto_bind) names the context it is for. A failed build leaves a gap.
    if (store_ != nullptr) {
        auto taken = record("take a context id", [this, &t] { t->id = store_->takeContextId(); });
        if (!taken.ok()) {
            unreserve(t->reservation);
            return taken.failure();
        }
    } else {
        t->id = nextId_++;
    }
    return t;
}

Outcome<std::unique_ptr<Context>> Engine::build(Ticket& t) const {
    const AllocateRequest& request = t.request;
    // The plugins: for each device the first DENY wins, nobody allowing is a deny.
    for (auto& r : t.resolved) {
        const std::string rule = r.rule != nullptr ? r.rule->name : "";
        PolicyQuery dq = policyQuery(request, r);
        dq.context = t.id;
        PolicyDecision pd = broker_.decide(dq);
        for (const auto& v : pd.verdicts) {
            auditVerdict(request, r.id, v.plugin, toString(v.verdict), v.reason, rule);
        }
        if (!pd.allowed) {
            if (pd.verdicts.empty() || pd.plugin.empty()) {
                auditVerdict(request, r.id, "svad", "DENY", pd.reason, rule);
            }
            return Failure{names::Error::PolicyDenied, r.id + ": " + pd.reason,
                           pd.plugin.empty() ? "none" : pd.plugin};
        }
        r.plugin = pd.plugin;
    }

    // Every kernel object, owned by ctx; teardown undoes a partial one.
    auto ctx = std::make_unique<Context>();
    ctx->id = t.id;
    ctx->vm = request.vm;
    ctx->ownerUid = request.ownerUid.value_or(request.caller.uid);
    // A reservation follows the VM, not its caller: no owner until one is named.
    ctx->ownerPid =
        request.ownerPid.value_or(request.mode == ContextMode::Reserved ? 0 : request.caller.pid);
    ctx->ownerBusName = request.mode == ContextMode::Reserved ? "" : request.caller.busName;
    ctx->mode = request.mode;
    ctx->createdUsec = t.nowUsec;

    auto failWith = [this, &ctx](const Failure& f) -> Outcome<std::unique_ptr<Context>> {
        teardown(*ctx);
        return f;
    };

    if (request.mode != ContextMode::Reserved) {
        auto iommufd = kernel_.openIommufd();
        if (!iommufd) {
            return failWith(kernelFailure(iommufd.error()));
        }
        ctx->iommufd = std::move(iommufd.value());
    }
    if (request.mode == ContextMode::Attached) {
        auto ioas = kernel_.ioasAlloc(ctx->iommufd.get());
        if (!ioas) {
            return failWith(kernelFailure(ioas.error()));
        }
        ctx->ioasId = ioas.value();
        auto ranges = kernel_.ioasIovaRanges(ctx->iommufd.get(), ctx->ioasId);
        if (!ranges) {
            return failWith(kernelFailure(ranges.error()));
        }
        ctx->iovaRanges = ranges.value();
    }
    for (const auto& r : t.resolved) {
        ContextDevice dev;
        dev.id = r.id;
        dev.kind = r.kind;
        dev.pasidWidth = r.pasidWidth;
        dev.plugin = r.plugin;
        dev.rule = r.rule != nullptr ? r.rule->name : "";
        // The plugin opens and prepares the device through the kernel port.
        PolicyQuery q = policyQuery(request, r);
        q.context = t.id;
        dev.options = q.options;
        auto prepared = broker_.prepare(r.plugin, q);
        if (!prepared.ok()) {
            return failWith(prepared.failure());
        }
        dev.fd = std::move(prepared.value().fd); // none for a queue: the client opens its node
        if (r.queue != nullptr && !r.queue->charDevice.empty()) {
            dev.node = kernel_.nodePath(r.queue->charDevice);
        }
        if (request.mode == ContextMode::Reserved) {
            // Opening proved the node usable; the VMM opens its own (a vhost-vdpa
            // node takes one opener at a time).
            dev.fd.reset();
        }
        dev.vdpaGroups = prepared.value().vdpaGroups;
        dev.vdpaAddressSpaces = prepared.value().vdpaAddressSpaces;
        ctx->hostChanged = ctx->hostChanged || prepared.value().hostChanged;
        if (r.kind == HeldKind::Vfio && request.mode == ContextMode::Attached) {
            auto devId = kernel_.vfioBind(dev.fd.get(), ctx->iommufd.get());
            if (!devId) {
                ctx->devices.push_back(std::move(dev));
                return failWith(kernelFailure(devId.error()));
            }
            dev.devId = devId.value();
            auto attached = kernel_.vfioAttach(dev.fd.get(), ctx->ioasId, std::nullopt);
            if (!attached) {
                ctx->devices.push_back(std::move(dev));
                return failWith(kernelFailure(attached.error()));
            }
            dev.attached = true;
        }
        ctx->devices.push_back(std::move(dev));
    }
    if (request.faultQueue) {
        auto fq = kernel_.faultQueueAlloc(ctx->iommufd.get());
        if (!fq) {
            return failWith(kernelFailure(fq.error()));
        }
        ctx->faultQueueId = fq->id;
        ctx->faultQueueFd = std::move(fq->fd);
    }
    return ctx;
}

Outcome<Context*> Engine::commit(Ticket& t, Outcome<std::unique_ptr<Context>> built) {
    unreserve(t.reservation);
    if (!built.ok()) {
        return built.failure();
    }
    std::unique_ptr<Context> ctx = std::move(built.value());
    if (auto granted = grantQueues(*ctx); !granted.ok()) {
        teardown(*ctx);
        return granted.failure();
    }
    // The record is written here, on the loop, not on the worker that built the
    // context: a record made there for an allocation that svad's stop cuts off
    // before this point would bring back, at the next start, a context its owner
    // was never given.
    if (store_ != nullptr) {
        ctx->ownerStartTime = startTimeOf_ ? startTimeOf_(ctx->ownerPid) : 0;
        auto recorded =
            record("record the new context", [this, &ctx] { store_->putContext(stored(*ctx)); });
        if (!recorded.ok()) {
            // Nothing was handed out: undo it here (rare: the state store failed).
            revokeQueues(*ctx);
            teardown(*ctx);
            return recorded.failure();
        }
    }
    keepFds(*ctx);
    for (const auto& d : ctx->devices) {
        held_[d.id].push_back(ctx->id);
    }
    // The host may have changed while it was built: a device gone already degrades it.
    // (On the host it was admitted on, every device was there.)
    const std::string gone = t.host == host_ ? std::string() : degradedReason(*ctx, *host_);
    ctx->state = gone.empty() ? ContextState::Active : ContextState::Degraded;
    Context* raw = ctx.get();
    contexts_.emplace(raw->id, std::move(ctx));
    for (auto* o : std::vector<ContextObserver*>(observers_)) {
        o->contextCreated(*raw);
    }
    if (!gone.empty()) {
        for (auto* o : std::vector<ContextObserver*>(observers_)) {
            o->contextStateChanged(*raw, gone);
        }
    }
    return raw;
}

Outcome<Context*> Engine::allocate(const AllocateRequest& request, uint64_t nowUsec) {
    auto ticket = admit(request, nowUsec);
    if (!ticket.ok()) {
        return ticket.failure();
    }
    Ticket& t = *ticket.value();
    return commit(t, build(t));
}

void Engine::allocate(const AllocateRequest& request, uint64_t nowUsec, AllocateDone done) {
    auto ticket = admit(request, nowUsec);
    if (!ticket.ok()) {
        done(ticket.failure());
        return;
    }
    auto t = std::shared_ptr<Ticket>(std::move(ticket.value()));
    auto built = std::make_shared<std::optional<Outcome<std::unique_ptr<Context>>>>();
    std::weak_ptr<int> alive = alive_;
    offload_->run([this, t, built] { built->emplace(build(*t)); },
                  [this, alive, t, built, done = std::move(done)] {
                      if (!alive.lock()) {
                          return;
                      }
                      if (!built->has_value()) {
                          // The build stopped on something it did not expect (the offload
                          // said so in the log); nothing of it is left.
                          built->emplace(Failure{names::Error::KernelError,
                                                 "the allocation stopped on an internal error",
                                                 {}});
                      }
                      auto stored = commit(*t, std::move(built->value()));
                      if (!stored.ok()) {
                          done(stored.failure());
                      } else {
                          done(static_cast<const Context*>(stored.value()));
                      }
                  });
}

void Engine::teardown(Context& ctx) const {
    // PASIDs first (detached from their devices), then devices, fault queue, IOAS.
    for (const auto& [pasid, device] : ctx.pasids) {
        for (auto& d : ctx.devices) {
            if (d.id == device && d.attached && d.kind == HeldKind::Vfio) {
                (void)kernel_.vfioDetach(d.fd.get(), pasid);
            }
        }
    }
    for (auto& d : ctx.devices) {
        if (d.attached) {
            auto r = kernel_.vfioDetach(d.fd.get(), std::nullopt);
            if (!r) {
                log::warning("detach failed: " + r.error().message, {{"DEVICE", d.id}});
            }
            d.attached = false;
        }
        d.fd.reset();
    }
    ctx.faultQueueFd.reset(); // the fault fd holds its object: IOMMU_DESTROY is EBUSY before
    if (ctx.faultQueueId != 0 && ctx.iommufd.valid()) {
        (void)kernel_.destroy(ctx.iommufd.get(), ctx.faultQueueId);
        ctx.faultQueueId = 0;
    }
    if (ctx.ioasId != 0 && ctx.iommufd.valid()) {
        auto r = kernel_.destroy(ctx.iommufd.get(), ctx.ioasId);
        if (!r) {
            log::warning("IOAS destroy failed: " + r.error().message, {{"VM", ctx.vm}});
        }
        ctx.ioasId = 0;
    }
    ctx.iommufd.reset();
    // Every fd of the context is closed: now the plugins may undo what they
    // prepared (giving a rebound function back waits for its fds to close).
    for (auto& d : ctx.devices) {
        if (d.plugin.empty()) {
            continue;
        }
        PolicyQuery q;
        q.vm = ctx.vm;
        q.uid = ctx.ownerUid;
        q.pid = ctx.ownerPid;
        q.mode = ctx.mode == ContextMode::Attached ? RequestMode::Attached : RequestMode::Handoff;
        q.deviceId = d.id;
        q.kind = d.kind == HeldKind::Vfio   ? DeviceKind::Pci
                 : d.kind == HeldKind::Vdpa ? DeviceKind::Vdpa
                                            : DeviceKind::Queue;
        q.rule = d.rule;
        q.options = d.options;
        q.hostChanged = ctx.hostChanged;
        q.context = ctx.id;
        broker_.release(d.plugin, q);
        d.plugin.clear();
    }
    // Then whatever is still rebound for it: what a plugin of the last run
    // rebound (it cannot know of it now), or a rebind that failed halfway.
    std::vector<std::string> ids;
    for (const auto& d : ctx.devices) {
        ids.push_back(d.id);
    }
    broker_.giveBack(ctx.id, ids);
}

// For a context just taken out of contexts_: its PASIDs leave the count with it.
void Engine::returnPasids(Context& ctx) {
    for (const auto& [pasid, device] : ctx.pasids) {
        pasids_.release(pasid, ctx.vm);
    }
    assert(pasidsHeld_ >= ctx.pasids.size());
    pasidsHeld_ -= ctx.pasids.size();
    ctx.pasids.clear();
}

Outcome<Done> Engine::grantQueues(const Context& ctx) {
    for (size_t i = 0; i < ctx.devices.size(); ++i) {
        const ContextDevice& d = ctx.devices[i];
        if (d.node.empty()) {
            continue;
        }
        auto granted = kernel_.grantNode(d.node, ctx.ownerUid);
        if (!granted) {
            revokeQueues(ctx, i);
            return kernelFailure(granted.error());
        }
        log::info("the owner's uid may open the queue's node",
                  {{"DEVICE", d.id},
                   {"NODE", d.node},
                   {"OWNER_UID", std::to_string(ctx.ownerUid)},
                   {"CONTEXT", std::to_string(ctx.id)}});
    }
    return Done{};
}

void Engine::revokeQueues(const Context& ctx, size_t count) {
    for (size_t i = 0; i < ctx.devices.size() && i < count; ++i) {
        const ContextDevice& d = ctx.devices[i];
        if (d.node.empty()) {
            continue;
        }
        bool shared = false; // another context of the same uid holds the queue
        if (auto h = held_.find(d.id); h != held_.end()) {
            for (uint64_t other : h->second) {
                auto c = contexts_.find(other);
                shared = shared || (other != ctx.id && c != contexts_.end() &&
                                    c->second->ownerUid == ctx.ownerUid);
            }
        }
        if (shared) {
            continue;
        }
        if (auto r = kernel_.revokeNode(d.node, ctx.ownerUid); !r) {
            log::warning("the owner's access to the queue's node stays: " + r.error().message,
                         {{"DEVICE", d.id}, {"CONTEXT", std::to_string(ctx.id)}});
        }
    }
}

std::string Engine::queueNode(const std::string& queue) const {
    const SiovQueue* q = host_->queue(queue);
    return q != nullptr && !q->charDevice.empty() ? kernel_.nodePath(q->charDevice) : std::string();
}

std::unique_ptr<Context> Engine::takeKernelObjects(Context& ctx) {
    // The teardown works on its own copy: the context stays readable on the loop
    // (its bus object answers until it is gone) while a worker closes its fds.
    auto doomed = std::make_unique<Context>();
    doomed->id = ctx.id;
    doomed->vm = ctx.vm;
    doomed->ownerUid = ctx.ownerUid;
    doomed->ownerPid = ctx.ownerPid;
    doomed->mode = ctx.mode;
    doomed->hostChanged = ctx.hostChanged;
    doomed->iommufd = std::move(ctx.iommufd);
    doomed->ioasId = ctx.ioasId;
    doomed->faultQueueId = ctx.faultQueueId;
    doomed->faultQueueFd = std::move(ctx.faultQueueFd);
    doomed->pasids = ctx.pasids; // to detach; the numbers go back to the pool afterwards
    for (auto& d : ctx.devices) {
        ContextDevice c;
        c.id = d.id;
        c.kind = d.kind;
        c.fd = std::move(d.fd);
        c.devId = d.devId;
        c.attached = d.attached;
        c.plugin = d.plugin;
        c.rule = d.rule;
        c.options = d.options;
        doomed->devices.push_back(std::move(c));
    }
    return doomed;
}

bool Engine::beginRelease(uint64_t id, const std::string& reason, std::function<void()> done) {
    if (contexts_.count(id) == 0) {
        if (done) {
            done();
        }
        return false;
    }
    auto [it, fresh] = leaving_.try_emplace(id, Leaving{reason, {}});
    if (done) {
        it->second.done.push_back(std::move(done));
    }
    return fresh; // a second release of the same context waits for the first one
}

void Engine::finishRelease(uint64_t id, bool forgotten) {
    auto leaving = leaving_.find(id);
    auto it = contexts_.find(id);
    if (leaving == leaving_.end() || it == contexts_.end()) {
        return;
    }
    Leaving l = std::move(leaving->second);
    leaving_.erase(leaving);
    std::unique_ptr<Context> ctx = std::move(it->second);
    contexts_.erase(it);
    if (fdStore_ != nullptr) {
        for (const auto& [name, fd] : fdNames(*ctx)) {
            fdStore_->drop(name);
        }
    }
    returnPasids(*ctx);
    for (const auto& d : ctx->devices) {
        auto h = held_.find(d.id);
        if (h != held_.end()) {
            std::erase(h->second, id);
            if (h->second.empty()) {
                held_.erase(h);
            }
        }
    }
    // Access goes before the record: a crash in between leaves a record whose
    // owner is gone (released at the next start), never a grant without one.
    revokeQueues(*ctx);
    if (store_ != nullptr && !forgotten) {
        // A failure leaves a stale record: the next start finds its owner gone.
        (void)record("forget context " + std::to_string(id),
                     [this, id] { store_->removeContext(id); });
    }
    for (auto* o : std::vector<ContextObserver*>(observers_)) {
        o->contextReleased(*ctx, l.reason);
    }
    for (auto& d : l.done) {
        d();
    }
}

void Engine::releaseUnchecked(uint64_t id, const std::string& reason) {
    if (!beginRelease(id, reason, {})) {
        return;
    }
    std::unique_ptr<Context> doomed = takeKernelObjects(*contexts_.at(id));
    teardown(*doomed);
    finishRelease(id);
}

void Engine::releaseAsync(uint64_t id, const std::string& reason, std::function<void()> done) {
    if (!beginRelease(id, reason, std::move(done))) {
        return;
    }
    const Context& ctx = *contexts_.at(id);
    // A context with queue nodes keeps its record until the loop has revoked
    // the owner's access (finishRelease); any other loses it on the worker,
    // once its kernel objects are gone.
    const bool nodes = std::any_of(ctx.devices.begin(), ctx.devices.end(),
                                   [](const ContextDevice& d) { return !d.node.empty(); });
    std::shared_ptr<Context> doomed = takeKernelObjects(*contexts_.at(id));
    auto forgotten = std::make_shared<bool>(false);
    std::weak_ptr<int> alive = alive_;
    offload_->run(
        [this, doomed, nodes, forgotten, id] {
            teardown(*doomed);
            if (store_ != nullptr && !nodes) {
                // A failure leaves a stale record: the next start finds its owner gone.
                (void)record("forget context " + std::to_string(id),
                             [this, id] { store_->removeContext(id); });
                *forgotten = true;
            }
        },
        [this, alive, id, forgotten] {
            if (alive.lock()) {
                finishRelease(id, *forgotten);
            }
        });
}

Outcome<Done> Engine::release(uint64_t id, const Caller& caller) {
    if (auto access = checkAccess(id, caller); !access.ok()) {
        return access;
    }
    releaseUnchecked(id);
    return Done{};
}

void Engine::setStateStore(ports::StateStore* store, std::function<uint64_t(pid_t)> startTimeOf) {
    store_ = store;
    startTimeOf_ = std::move(startTimeOf);
}

Outcome<Done> Engine::record(const std::string& what, const std::function<void()>& change) const {
    try {
        change();
        return Done{};
    } catch (const ports::StateError& e) {
        log::error("cannot " + what + ": " + e.what(),
                   {{"STATE_ERROR", std::string(ports::codeName(e.code()))}});
        return fail(names::Error::KernelError, "cannot " + what + " in svad's state: " + e.what());
    }
}

ports::StoredContext Engine::stored(const Context& ctx) const {
    ports::StoredContext s;
    s.id = ctx.id;
    s.vm = ctx.vm;
    s.ownerUid = ctx.ownerUid;
    s.ownerPid = ctx.ownerPid;
    s.ownerStartTime = ctx.ownerStartTime;
    s.ownerBusName = ctx.ownerBusName;
    s.mode = static_cast<uint32_t>(ctx.mode);
    s.ioasId = ctx.ioasId;
    s.faultQueueId = ctx.faultQueueId;
    s.createdUsec = ctx.createdUsec;
    for (const auto& d : ctx.devices) {
        s.devices.push_back(
            ports::StoredDevice{d.id, static_cast<uint32_t>(d.kind), d.devId, d.plugin, d.rule});
    }
    s.pasids = ctx.pasids;
    s.virtualIds = ctx.virtualIds;
    if (fdStore_ != nullptr) {
        for (const auto& [name, fd] : fdNames(ctx)) {
            if (auto id = identityOf(fd)) {
                s.fds[name] = *id;
            }
        }
    }
    return s;
}

std::optional<ports::StoredFdIdentity> Engine::identityOf(int fd) {
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
        return std::nullopt;
    }
    return ports::StoredFdIdentity{static_cast<uint32_t>(st.st_mode & S_IFMT),
                                   static_cast<uint64_t>(st.st_rdev)};
}

std::vector<std::pair<std::string, int>> Engine::fdNames(const Context& ctx) {
    std::vector<std::pair<std::string, int>> out;
    out.emplace_back(ports::fdStoreName(ctx.id, "iommufd"), ctx.iommufd.get());
    for (size_t i = 0; i < ctx.devices.size(); ++i) {
        out.emplace_back(ports::fdStoreName(ctx.id, "dev" + std::to_string(i)),
                         ctx.devices[i].fd.get());
    }
    if (ctx.faultQueueId != 0) {
        out.emplace_back(ports::fdStoreName(ctx.id, "fault"), ctx.faultQueueFd.get());
    }
    return out;
}

void Engine::keepFds(const Context& ctx) {
    if (fdStore_ == nullptr) {
        return;
    }
    for (const auto& [name, fd] : fdNames(ctx)) {
        if (fd < 0) {
            continue;
        }
        if (auto kept = fdStore_->keep(name, fd); !kept) {
            log::warning("fd not kept across restarts: " + kept.error().message,
                         {{"CONTEXT", std::to_string(ctx.id)}});
            return; // the rest would fail alike; the context comes back without fds
        }
    }
}

uint32_t Engine::pasidWidthOf(const std::string& device) const {
    // As admission finds it: a function's own (a VF: its PF's), a vDPA
    // device's or queue's parent function's.
    const HostIndex& h = *host_;
    const PciDevice* pci = h.pci(device);
    if (pci == nullptr) {
        if (const VdpaDevice* v = h.vdpa(device)) {
            pci = h.pci(v->parentDevice);
        } else if (const SiovQueue* q = h.queue(device)) {
            pci = h.pci(q->parentDevice);
        }
    }
    return pci != nullptr ? h.pasidWidth(*pci) : 0;
}

uint64_t Engine::contextOfFdName(const std::string& name) {
    // "ctx12-iommufd" -> 12
    if (name.rfind("ctx", 0) != 0) {
        return 0;
    }
    uint64_t id = 0;
    const char* first = name.data() + 3;
    const char* last = name.data() + name.size();
    auto [end, ec] = std::from_chars(first, last, id);
    return ec == std::errc() && end != first && end != last && *end == '-' ? id : 0;
}

Engine::Restored Engine::restore(const std::function<bool(pid_t, uint64_t)>& ownerAlive,
                                 std::vector<ports::StoredFd> passed) {
    Restored out;
    restoring_ = true;
    struct EndOfRestore {
        Engine& e;
        ~EndOfRestore() {
            e.restoring_ = false;
            for (auto* o : std::vector<ContextObserver*>(e.observers_)) {
                o->contextsRestored();
            }
        }
    } end{*this};
    std::map<std::string, ports::UniqueFd> byName;
    for (auto& p : passed) {
        byName[p.name] = std::move(p.fd); // a name stored twice: the later fd
    }
    if (store_ == nullptr) {
        return out;
    }
    std::vector<ports::StoredContext> all;
    std::vector<ports::AutoBindRecord> rebound;
    try {
        all = store_->contexts();
        rebound = store_->autoBinds();
    } catch (const ports::StateError& e) {
        log::error(std::string("cannot read the contexts of the last run: ") + e.what());
        return out;
    }
    // An id the service manager still holds fds for was handed out, even if the
    // database does not know it (it was moved aside): the next ids go past it.
    uint64_t highest = 0;
    for (const auto& [name, fd] : byName) {
        highest = std::max(highest, contextOfFdName(name));
    }
    if (highest != 0) {
        (void)record("raise the next context id",
                     [this, highest] { store_->raiseNextContextId(highest + 1); });
    }
    std::vector<uint64_t> gone;
    for (const auto& s : all) {
        auto ctx = std::make_unique<Context>();
        ctx->id = s.id;
        ctx->vm = s.vm;
        ctx->ownerUid = s.ownerUid;
        ctx->ownerPid = s.ownerPid;
        ctx->ownerStartTime = s.ownerStartTime;
        ctx->ownerBusName = s.ownerBusName;
        ctx->mode = s.mode == static_cast<uint32_t>(ContextMode::Attached)   ? ContextMode::Attached
                    : s.mode == static_cast<uint32_t>(ContextMode::Reserved) ? ContextMode::Reserved
                                                                             : ContextMode::Handoff;
        ctx->ioasId = s.ioasId;
        ctx->faultQueueId = s.faultQueueId;
        ctx->createdUsec = s.createdUsec;
        ctx->fdsHeld = false;
        // A passed fd is taken when it is what was stored under its name: the
        // same type, the same device (every iommufd has /dev/iommu's rdev: the
        // name says which context it is). One that is not is closed. A context
        // recorded with no identities (no fd store then) is matched by name.
        auto take = [this, &byName, &s, &out](const std::string& name) {
            auto it = byName.find(name);
            if (it == byName.end()) {
                return ports::UniqueFd();
            }
            ports::UniqueFd fd = std::move(it->second);
            byName.erase(it);
            auto was = s.fds.find(name);
            auto now = identityOf(fd.get());
            if (!s.fds.empty() && (was == s.fds.end() || !now || !(*now == was->second))) {
                log::warning("a stored fd is not what its context kept under that name; closed",
                             {{"FDNAME", name},
                              {"CONTEXT", std::to_string(s.id)},
                              {"TYPE", now ? std::to_string(now->type) : "closed"},
                              {"RDEV", now ? std::to_string(now->rdev) : "0"}});
                if (fdStore_ != nullptr) {
                    fdStore_->drop(name);
                }
                ++out.fdsClosed;
                return ports::UniqueFd();
            }
            return fd;
        };
        const bool reserved = ctx->mode == ContextMode::Reserved; // it holds no fds
        if (!reserved) {
            ctx->iommufd = take(ports::fdStoreName(s.id, "iommufd"));
        }
        bool all = reserved || ctx->iommufd.valid();
        for (const auto& d : s.devices) {
            ContextDevice dev;
            dev.id = d.id;
            dev.kind = d.kind == 2   ? HeldKind::Vdpa
                       : d.kind == 3 ? HeldKind::Queue
                                     : HeldKind::Vfio;
            dev.devId = d.devId;
            dev.attached = ctx->mode == ContextMode::Attached && dev.kind == HeldKind::Vfio;
            dev.plugin = d.plugin;
            dev.rule = d.rule;
            dev.pasidWidth = pasidWidthOf(d.id);
            if (dev.kind == HeldKind::Queue) {
                dev.node = queueNode(d.id); // no fd: the client opened the node
            } else if (!reserved) {
                dev.fd =
                    take(ports::fdStoreName(s.id, "dev" + std::to_string(ctx->devices.size())));
                all = all && dev.fd.valid();
            }
            ctx->devices.push_back(std::move(dev));
        }
        if (ctx->faultQueueId != 0) {
            ctx->faultQueueFd = take(ports::fdStoreName(s.id, "fault"));
            all = all && ctx->faultQueueFd.valid();
        }
        if (all) {
            ctx->fdsHeld = true;
        } else {
            // Some are missing: svad cannot act for it with the rest either.
            for (const auto& [name, fd] : fdNames(*ctx)) {
                if (fdStore_ != nullptr && fd >= 0) {
                    fdStore_->drop(name);
                }
            }
            ctx->iommufd.reset();
            ctx->faultQueueFd.reset();
            for (auto& d : ctx->devices) {
                d.fd.reset();
                d.attached = false; // nothing for a teardown to detach
            }
        }
        for (const auto& [pasid, device] : s.pasids) {
            if (pasids_.claim(pasid, s.vm)) {
                ctx->pasids[pasid] = device;
            } else {
                log::warning("PASID " + std::to_string(pasid) + " of context " +
                                 std::to_string(s.id) + " is held twice in svad's state; dropped",
                             {{"CONTEXT", std::to_string(s.id)}});
            }
        }
        ctx->virtualIds = s.virtualIds;
        for (const auto& d : ctx->devices) {
            held_[d.id].push_back(ctx->id);
        }
        // A reservation with no owner yet is held by its VM's name alone.
        const bool alive = (reserved && ctx->ownerPid == 0) ||
                           (ownerAlive && ownerAlive(ctx->ownerPid, ctx->ownerStartTime));
        log::notice(!alive ? "context of the last run: its owner exited while svad was down"
                    : ctx->fdsHeld
                        ? "context taken back after a restart, with its fds"
                        : "context taken back after a restart, without its fds: its devices "
                          "stay reserved until its owner lets go",
                    {{"CONTEXT", std::to_string(ctx->id)},
                     {"VM", ctx->vm},
                     {"OWNER_PID", std::to_string(ctx->ownerPid)}});
        Context* raw = ctx.get();
        contexts_.emplace(raw->id, std::move(ctx));
        pasidsHeld_ += raw->pasids.size();
        for (auto* o : std::vector<ContextObserver*>(observers_)) {
            o->contextCreated(*raw);
        }
        if (alive) {
            if (auto granted = grantQueues(*raw); !granted.ok()) {
                log::warning("a queue of a context taken back is not open to its owner: " +
                                 granted.failure().message,
                             {{"CONTEXT", std::to_string(raw->id)}});
            }
            ++(raw->fdsHeld ? out.kept : out.reserved);
        } else {
            gone.push_back(raw->id);
        }
    }
    for (uint64_t id : gone) {
        releaseAsync(id, "owner exited while svad was down");
        ++out.released;
    }
    // A function rebound for a context that did not survive (its allocation
    // was cut short) goes back to its driver.
    std::set<uint64_t> stored;
    for (const auto& s : all) {
        stored.insert(s.id);
    }
    std::set<uint64_t> orphaned;
    for (const auto& r : rebound) {
        if (stored.count(r.context) == 0) {
            log::notice("auto_bind record of a context that did not survive: " + r.address +
                            " goes back to " +
                            (r.previousDriver.empty() ? "no driver" : r.previousDriver),
                        {{"DEVICE", r.address}, {"CONTEXT", std::to_string(r.context)}});
            orphaned.insert(r.context);
            ++out.givenBack;
        }
    }
    for (uint64_t id : orphaned) {
        broker_.giveBack(id, {});
    }
    // What no context took: closed here, and gone from the store.
    for (auto& [name, fd] : byName) {
        if (fdStore_ != nullptr) {
            fdStore_->drop(name);
        }
        log::notice("a stored fd no context claims was closed", {{"FDNAME", name}});
        ++out.fdsClosed;
    }
    return out;
}

std::string goneDevices(const Context& ctx, const HostIndex& host) {
    std::string gone;
    for (const auto& d : ctx.devices) {
        if (!host.has(d.id)) {
            gone += (gone.empty() ? "" : ",") + d.id;
        }
    }
    return gone;
}

std::string Engine::degradedReason(const Context& ctx, const HostIndex& host) {
    const std::string gone = goneDevices(ctx, host);
    return gone.empty() ? std::string() : "device " + gone + " removed from the host";
}

std::vector<uint64_t> Engine::markDegraded() {
    std::vector<uint64_t> changed;
    for (auto& [id, ctx] : contexts_) {
        if (leaving_.count(id) != 0) {
            continue; // going anyway
        }
        const std::string reason = degradedReason(*ctx, *host_);
        ContextState next = reason.empty() ? ContextState::Active : ContextState::Degraded;
        if (next != ctx->state) {
            ctx->state = next;
            changed.push_back(id);
            for (auto* o : std::vector<ContextObserver*>(observers_)) {
                o->contextStateChanged(*ctx, reason);
            }
        }
    }
    return changed;
}

std::vector<uint64_t> Engine::reservationsOf(const std::string& vm) const {
    std::vector<uint64_t> out;
    for (const auto& [id, ctx] : contexts_) {
        if (ctx->mode == ContextMode::Reserved && ctx->vm == vm && leaving_.count(id) == 0) {
            out.push_back(id);
        }
    }
    return out;
}

Outcome<std::vector<uint64_t>> Engine::setVmOwner(const std::string& vm, pid_t pid, uid_t uid,
                                                  const Caller& caller) {
    const std::vector<uint64_t> ids = reservationsOf(vm);
    if (ids.empty()) {
        return fail(names::Error::NotFound, "vm " + echo(vm) + " holds no reservation");
    }
    // As for owner_pid: only root hands devices to another user's process (the
    // new owner's uid gets the queues' nodes, and only it may release them).
    if (caller.uid != 0 && uid != caller.uid) {
        return fail(names::Error::PermissionDenied,
                    "only root may hand a reservation to a process of another user (pid " +
                        std::to_string(pid) + " runs as uid " + std::to_string(uid) + ")");
    }
    for (uint64_t id : ids) {
        if (auto ok = checkOwner(*contexts_.at(id), caller); !ok.ok()) {
            return ok.failure();
        }
    }
    const uint64_t startTime = startTimeOf_ ? startTimeOf_(pid) : 0;
    struct Before {
        pid_t pid;
        uid_t uid;
        uint64_t startTime;
    };
    std::vector<Before> before;
    for (uint64_t id : ids) {
        const Context& ctx = *contexts_.at(id);
        before.push_back({ctx.ownerPid, ctx.ownerUid, ctx.ownerStartTime});
    }
    // All or nothing: every reservation moves, or none does.
    auto undo = [this, &ids, &before](size_t count, bool revoke) {
        for (size_t i = 0; i < count; ++i) {
            Context& ctx = *contexts_.at(ids[i]);
            if (revoke && ctx.ownerUid != before[i].uid) {
                revokeQueues(ctx);
            }
            ctx.ownerPid = before[i].pid;
            ctx.ownerUid = before[i].uid;
            ctx.ownerStartTime = before[i].startTime;
        }
    };
    for (size_t i = 0; i < ids.size(); ++i) {
        Context& ctx = *contexts_.at(ids[i]);
        ctx.ownerPid = pid;
        ctx.ownerUid = uid;
        ctx.ownerStartTime = startTime;
        // Its work queues' nodes: the new owner's uid may open them (the old one's
        // goes once all are recorded).
        if (uid != before[i].uid) {
            if (auto granted = grantQueues(ctx); !granted.ok()) {
                undo(i, true);
                ctx.ownerPid = before[i].pid;
                ctx.ownerUid = before[i].uid;
                ctx.ownerStartTime = before[i].startTime;
                return granted.failure();
            }
        }
    }
    if (store_ != nullptr) {
        for (size_t i = 0; i < ids.size(); ++i) {
            Context& ctx = *contexts_.at(ids[i]);
            auto recorded = record("record a reservation's owner",
                                   [this, &ctx] { store_->putContext(stored(ctx)); });
            if (!recorded.ok()) {
                undo(ids.size(), true);
                for (size_t k = 0; k < i; ++k) { // the ones recorded already, as they were
                    const Context& back = *contexts_.at(ids[k]);
                    (void)record("restore a reservation's owner",
                                 [this, &back] { store_->putContext(stored(back)); });
                }
                return recorded.failure();
            }
        }
    }
    for (size_t i = 0; i < ids.size(); ++i) {
        Context& ctx = *contexts_.at(ids[i]);
        if (uid != before[i].uid) {
            ctx.ownerUid = before[i].uid;
            revokeQueues(ctx);
            ctx.ownerUid = uid;
        }
        log::notice("reservation handed to its owner",
                    {{"VM", ctx.vm},
                     {"CONTEXT", std::to_string(ids[i])},
                     {"OWNER_PID", std::to_string(pid)},
                     {"OWNER_UID", std::to_string(uid)},
                     {"CALLER_UID", std::to_string(caller.uid)}});
        for (auto* o : std::vector<ContextObserver*>(observers_)) {
            o->contextOwnerChanged(ctx);
        }
    }
    return ids;
}

const Context* Engine::find(uint64_t id) const {
    auto it = contexts_.find(id);
    return it == contexts_.end() ? nullptr : it->second.get();
}

uint64_t Engine::holderOf(const std::string& device) const {
    auto it = held_.find(device);
    return it == held_.end() || it->second.empty() ? 0 : it->second.front();
}

std::vector<uint64_t> Engine::holdersOf(const std::string& device) const {
    auto it = held_.find(device);
    return it == held_.end() ? std::vector<uint64_t>{} : it->second;
}

Outcome<Done> Engine::checkOwner(const Context& ctx, const Caller& caller) const {
    if (caller.uid != 0 && caller.uid != ctx.ownerUid) {
        return fail(names::Error::PermissionDenied, "context " + std::to_string(ctx.id) +
                                                        " belongs to uid " +
                                                        std::to_string(ctx.ownerUid));
    }
    return Done{};
}

Outcome<Done> Engine::checkAccess(uint64_t id, const Caller& caller) const {
    auto it = contexts_.find(id);
    if (it == contexts_.end()) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    if (leaving_.count(id) != 0) {
        return fail(names::Error::NotFound, "context " + std::to_string(id) + " is being released");
    }
    return checkOwner(*it->second, caller);
}

Context* Engine::usable(uint64_t id) {
    auto it = contexts_.find(id);
    return it == contexts_.end() || leaving_.count(id) != 0 ? nullptr : it->second.get();
}

Outcome<uint32_t> Engine::allocatePasid(uint64_t id, const std::string& device,
                                        const Caller& caller) {
    Context* found = usable(id);
    if (found == nullptr) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *found;
    if (auto owner = checkOwner(ctx, caller); !owner.ok()) {
        return owner.failure();
    }
    ContextDevice* dev = nullptr;
    for (auto& d : ctx.devices) {
        if (d.id == device) {
            dev = &d;
        }
    }
    if (dev == nullptr) {
        return fail(names::Error::InvalidArgument,
                    echo(device) + " is not in context " + std::to_string(id));
    }
    if (dev->pasidWidth == 0) {
        return fail(names::Error::NotSupported,
                    device + " cannot use PASIDs: it has no PASID capability, or its IOMMU "
                             "unit does not support PASID");
    }
    if (const Rule* rule = config_->rule(dev->rule); rule != nullptr && rule->limits.pasidQuota) {
        uint32_t n = 0;
        for (const auto& [cid, c] : contexts_) {
            if (c->vm != ctx.vm) {
                continue;
            }
            for (const auto& [pasid, owner] : c->pasids) {
                const ContextDevice* d = c->device(owner);
                n += d != nullptr && d->rule == dev->rule ? 1 : 0;
            }
        }
        if (n >= *rule->limits.pasidQuota) {
            return fail(names::Error::QuotaExceeded,
                        "vm " + ctx.vm + " holds " + std::to_string(n) +
                            " PASIDs on devices of rule '" + rule->name + "' (pasid_quota " +
                            std::to_string(*rule->limits.pasidQuota) + ")");
        }
    }
    // The VM's own quota when the configuration names it, else the default.
    pasids_.clearQuota(ctx.vm);
    for (const auto& [glob, quota] : config_->pasidQuotas) {
        if (globMatch(glob, ctx.vm)) {
            pasids_.setQuota(ctx.vm, quota);
            break;
        }
    }
    auto got = pasids_.allocate(dev->pasidWidth, ctx.vm);
    if (got.status == PasidStatus::QuotaExceeded) {
        return fail(names::Error::QuotaExceeded, "vm " + ctx.vm + " holds its quota of " +
                                                     std::to_string(pasids_.quota(ctx.vm)) +
                                                     " PASIDs");
    }
    if (got.status != PasidStatus::Ok) {
        return fail(names::Error::Busy,
                    "no free PASID below 2^" + std::to_string(dev->pasidWidth) + " for " + device);
    }
    if (dev->attached && dev->kind == HeldKind::Vfio) {
        if (!ctx.fdsHeld) {
            pasids_.release(got.pasid, ctx.vm);
            return fail(names::Error::NotSupported,
                        "context " + std::to_string(id) +
                            " came back after a restart without its fds: svad cannot attach a "
                            "PASID for it");
        }
        auto r = kernel_.vfioAttach(dev->fd.get(), ctx.ioasId, got.pasid);
        if (!r) {
            pasids_.release(got.pasid, ctx.vm);
            return kernelFailure(r.error());
        }
    }
    if (store_ != nullptr) {
        auto recorded =
            record("record PASID " + std::to_string(got.pasid),
                   [this, id, &got, &device] { store_->putPasid(id, got.pasid, device); });
        if (!recorded.ok()) {
            if (dev->attached && dev->kind == HeldKind::Vfio) {
                (void)kernel_.vfioDetach(dev->fd.get(), got.pasid);
            }
            pasids_.release(got.pasid, ctx.vm);
            return recorded.failure();
        }
    }
    pasidsHeld_ += ctx.pasids.insert_or_assign(got.pasid, device).second ? 1 : 0;
    return got.pasid;
}

Outcome<Done> Engine::releasePasid(uint64_t id, uint32_t pasid, const Caller& caller) {
    Context* found = usable(id);
    if (found == nullptr) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *found;
    if (auto owner = checkOwner(ctx, caller); !owner.ok()) {
        return owner;
    }
    auto p = ctx.pasids.find(pasid);
    if (p == ctx.pasids.end()) {
        return fail(names::Error::NotFound,
                    "context " + std::to_string(id) + " holds no PASID " + std::to_string(pasid));
    }
    for (auto& d : ctx.devices) {
        if (d.id == p->second && d.attached && d.kind == HeldKind::Vfio) {
            (void)kernel_.vfioDetach(d.fd.get(), pasid);
        }
    }
    if (store_ != nullptr) {
        (void)record("forget PASID " + std::to_string(pasid),
                     [this, id, pasid] { store_->removePasid(id, pasid); });
    }
    pasids_.release(pasid, ctx.vm);
    ctx.pasids.erase(p);
    --pasidsHeld_;
    return Done{};
}

Outcome<Done> Engine::setVirtualId(uint64_t id, const std::string& device, uint64_t virtId,
                                   const Caller& caller) {
    Context* found = usable(id);
    if (found == nullptr) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *found;
    if (auto owner = checkOwner(ctx, caller); !owner.ok()) {
        return owner;
    }
    if (ctx.device(device) == nullptr) {
        return fail(names::Error::InvalidArgument,
                    echo(device) + " is not in context " + std::to_string(id));
    }
    // Unique in the VM: a guest sees the devices of all its contexts side by side.
    for (const auto& [cid, c] : contexts_) {
        if (c->vm != ctx.vm) {
            continue;
        }
        for (const auto& [dev, v] : c->virtualIds) {
            if (v == virtId && (dev != device || cid != id)) {
                return fail(names::Error::Busy,
                            "virtual ID " + std::to_string(virtId) + " is already used by " + dev +
                                " in vm " + ctx.vm + " (context " + std::to_string(cid) + ")");
            }
        }
    }
    if (store_ != nullptr) {
        auto recorded = record("record a virtual ID", [this, id, &device, virtId] {
            store_->putVirtualId(id, device, virtId);
        });
        if (!recorded.ok()) {
            return recorded;
        }
    }
    ctx.virtualIds[device] = virtId;
    return Done{};
}

size_t Engine::pasidCount() const {
    return pasidsHeld_;
}

} // namespace svad::core
