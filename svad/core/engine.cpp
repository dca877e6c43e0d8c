#include "svad/core/engine.h"

#include "svad/core/log.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <set>

namespace svad::core {

namespace {

constexpr size_t kMaxVmName = 128;

Failure fail(names::Error e, std::string message) {
    return Failure{e, std::move(message)};
}

// A kernel error as the caller sees it: the errno picks the name, the
// message says which call failed on what.
Failure kernelFailure(const ports::KernelError& e) {
    names::Error name = names::errorFromErrno(e.err);
    if (e.err == ENOTTY || e.err == ENOSYS) {
        name = names::Error::NotSupported;
    }
    return Failure{name, e.message};
}

bool validVmName(const std::string& vm) {
    if (vm.empty() || vm.size() > kMaxVmName) {
        return false;
    }
    return std::all_of(vm.begin(), vm.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' ||
               c == '.' || c == ':' || c == '@';
    });
}

} // namespace

struct Engine::Resolved {
    std::string id;
    HeldKind kind = HeldKind::Vfio;
    std::string node; // vfioN, vhost-vdpa-N, wqX.Y
    uint32_t pasidWidth = 0;
};

const ContextDevice* Context::device(const std::string& id) const {
    for (const auto& d : devices) {
        if (d.id == id) {
            return &d;
        }
    }
    return nullptr;
}

Engine::Engine(ports::Kernel& kernel, PasidAllocator& pasids) : kernel_(kernel), pasids_(pasids) {}

Engine::~Engine() {
    // svad is stopping, not the VMs: make no kernel call (a detach or destroy
    // would pull the devices from under a running VM sharing these open files);
    // svad's copies of the fds close, the VMMs' keep the objects alive.
    for (auto& [id, ctx] : contexts_) {
        for (const auto& [pasid, device] : ctx->pasids) {
            pasids_.release(pasid, ctx->vm);
        }
    }
}

void Engine::setHost(Host host) {
    host_ = std::move(host);
}

const PciDevice* Engine::pciDevice(const std::string& address) const {
    for (const auto& d : host_.devices) {
        if (d.address == address) {
            return &d;
        }
    }
    return nullptr;
}

uint32_t Engine::pasidWidthOf(const PciDevice& dev) const {
    const PciDevice* owner = &dev;
    // VFs share their PF's PASID capability.
    if (!dev.caps.pasid.present && !dev.physfn.empty()) {
        if (const PciDevice* pf = pciDevice(dev.physfn)) {
            owner = pf;
        }
    }
    if (!owner->caps.pasid.present) {
        return 0;
    }
    uint32_t width = owner->caps.pasid.maxWidth;
    for (const auto& u : host_.units) {
        if (u.name == dev.iommuUnit && u.vtd) {
            width = u.vtd->pasid ? std::min(width, u.vtd->pasidWidth) : 0;
        }
    }
    return width;
}

Outcome<std::vector<Engine::Resolved>> Engine::resolve(const AllocateRequest& request) const {
    std::vector<Resolved> out;
    std::set<std::string> seen;
    for (const auto& id : request.devices) {
        if (!seen.insert(id).second) {
            return fail(names::Error::InvalidArgument, "device " + id + " is listed twice");
        }
        if (auto holder = holderOf(id); holder != 0) {
            return fail(names::Error::Busy, id + " is held by context " + std::to_string(holder) +
                                                " (vm " + contexts_.at(holder)->vm + ")");
        }
        Resolved r;
        r.id = id;
        if (const PciDevice* dev = pciDevice(id)) {
            if (dev->vfioDevice.empty()) {
                return fail(names::Error::NotSupported,
                            id + " has no VFIO device cdev (driver: " +
                                (dev->driver.empty() ? "none" : dev->driver) +
                                "): bind it to vfio-pci first");
            }
            if (dev->group) {
                const IommuGroup* group = nullptr;
                for (const auto& g : host_.groups) {
                    if (g.id == *dev->group) {
                        group = &g;
                    }
                }
                if (group != nullptr) {
                    if (!group->viable) {
                        std::string why;
                        for (const auto& b : group->blockers) {
                            why += (why.empty() ? "" : ", ") + b;
                        }
                        return fail(names::Error::Busy, "IOMMU group " + std::to_string(group->id) +
                                                            " of " + id + " is not viable: " + why);
                    }
                    for (const auto& member : group->devices) {
                        if (auto holder = holderOf(member); holder != 0) {
                            return fail(names::Error::Busy,
                                        id + " shares IOMMU group " + std::to_string(group->id) +
                                            " with " + member + ", held by context " +
                                            std::to_string(holder));
                        }
                    }
                }
            }
            r.kind = HeldKind::Vfio;
            r.node = dev->vfioDevice;
            r.pasidWidth = pasidWidthOf(*dev);
        } else if (auto v = std::find_if(host_.vdpa.begin(), host_.vdpa.end(),
                                         [&id](const VdpaDevice& x) { return x.name == id; });
                   v != host_.vdpa.end()) {
            if (v->vhostDevice.empty()) {
                return fail(names::Error::NotSupported,
                            id + " has no vhost-vdpa device (driver: " +
                                (v->driver.empty() ? "none" : v->driver) +
                                "): bind it to vhost_vdpa first");
            }
            r.kind = HeldKind::Vdpa;
            r.node = v->vhostDevice;
            if (const PciDevice* parent = pciDevice(v->parentDevice)) {
                r.pasidWidth = pasidWidthOf(*parent);
            }
        } else if (auto q = std::find_if(host_.queues.begin(), host_.queues.end(),
                                         [&id](const SiovQueue& x) { return x.name == id; });
                   q != host_.queues.end()) {
            if (q->type != QueueType::User || q->state != QueueState::Enabled ||
                q->charDevice.empty()) {
                return fail(names::Error::NotSupported, id + " is not an enabled user work queue");
            }
            r.kind = HeldKind::Queue;
            r.node = q->name;
            if (const PciDevice* parent = pciDevice(q->parentDevice)) {
                r.pasidWidth = pasidWidthOf(*parent);
            }
        } else {
            return fail(names::Error::NotFound,
                        "no PCI device, vDPA device or work queue named '" + id + "'");
        }
        out.push_back(std::move(r));
    }
    return out;
}

Outcome<Context*> Engine::allocate(const AllocateRequest& request, uint64_t nowUsec) {
    if (!validVmName(request.vm)) {
        return fail(names::Error::InvalidArgument,
                    "vm name '" + request.vm +
                        "' must be 1 to 128 characters of letters, digits and - _ . : @");
    }
    if (request.devices.empty()) {
        return fail(names::Error::InvalidArgument, "no devices given");
    }
    if (request.ownerPid && request.caller.uid != 0) {
        return fail(names::Error::PermissionDenied, "only root may name another owner_pid");
    }
    if (request.mode != ContextMode::Handoff && request.mode != ContextMode::Attached) {
        return fail(names::Error::InvalidArgument, "mode must be handoff or attached");
    }
    auto resolved = resolve(request);
    if (!resolved.ok()) {
        return resolved.failure();
    }

    // Phase one: every kernel object, owned by ctx; teardown undoes a partial one.
    auto ctx = std::make_unique<Context>();
    ctx->vm = request.vm;
    ctx->ownerUid = request.caller.uid;
    ctx->ownerPid = request.ownerPid.value_or(request.caller.pid);
    ctx->ownerBusName = request.caller.busName;
    ctx->mode = request.mode;
    ctx->createdUsec = nowUsec;

    auto failWith = [this, &ctx](const ports::KernelError& e) -> Outcome<Context*> {
        teardown(*ctx);
        return kernelFailure(e);
    };

    auto iommufd = kernel_.openIommufd();
    if (!iommufd) {
        return failWith(iommufd.error());
    }
    ctx->iommufd = std::move(iommufd.value());
    if (request.mode == ContextMode::Attached) {
        auto ioas = kernel_.ioasAlloc(ctx->iommufd.get());
        if (!ioas) {
            return failWith(ioas.error());
        }
        ctx->ioasId = ioas.value();
        auto ranges = kernel_.ioasIovaRanges(ctx->iommufd.get(), ctx->ioasId);
        if (!ranges) {
            return failWith(ranges.error());
        }
        ctx->iovaRanges = ranges.value();
    }
    for (const auto& r : resolved.value()) {
        ContextDevice dev;
        dev.id = r.id;
        dev.kind = r.kind;
        dev.pasidWidth = r.pasidWidth;
        if (r.kind == HeldKind::Vfio) {
            auto fd = kernel_.openVfioDevice(r.node);
            if (!fd) {
                return failWith(fd.error());
            }
            dev.fd = std::move(fd.value());
            if (request.mode == ContextMode::Attached) {
                auto devId = kernel_.vfioBind(dev.fd.get(), ctx->iommufd.get());
                if (!devId) {
                    ctx->devices.push_back(std::move(dev));
                    return failWith(devId.error());
                }
                dev.devId = devId.value();
                auto attached = kernel_.vfioAttach(dev.fd.get(), ctx->ioasId, std::nullopt);
                if (!attached) {
                    ctx->devices.push_back(std::move(dev));
                    return failWith(attached.error());
                }
                dev.attached = true;
            }
        } else if (r.kind == HeldKind::Vdpa) {
            auto fd = kernel_.openVhostVdpa(r.node);
            if (!fd) {
                return failWith(fd.error());
            }
            dev.fd = std::move(fd.value());
            auto groups = kernel_.vdpaGroupNum(dev.fd.get());
            if (!groups) {
                ctx->devices.push_back(std::move(dev));
                return failWith(groups.error());
            }
            auto spaces = kernel_.vdpaAsNum(dev.fd.get());
            if (!spaces) {
                ctx->devices.push_back(std::move(dev));
                return failWith(spaces.error());
            }
            dev.vdpaGroups = groups.value();
            dev.vdpaAddressSpaces = spaces.value();
        } else {
            auto fd = kernel_.openWorkQueue(r.node);
            if (!fd) {
                return failWith(fd.error());
            }
            dev.fd = std::move(fd.value());
        }
        ctx->devices.push_back(std::move(dev));
    }
    if (request.faultQueue) {
        auto fq = kernel_.faultQueueAlloc(ctx->iommufd.get());
        if (!fq) {
            return failWith(fq.error());
        }
        ctx->faultQueueId = fq->id;
        ctx->faultQueueFd = std::move(fq->fd);
    }

    // Phase two: publish.
    ctx->id = nextId_++;
    for (const auto& d : ctx->devices) {
        held_[d.id] = ctx->id;
    }
    Context* raw = ctx.get();
    contexts_.emplace(raw->id, std::move(ctx));
    return raw;
}

void Engine::teardown(Context& ctx) {
    // PASIDs first (detached from their devices), then devices, fault queue, IOAS.
    for (const auto& [pasid, device] : ctx.pasids) {
        for (auto& d : ctx.devices) {
            if (d.id == device && d.attached && d.kind == HeldKind::Vfio) {
                (void)kernel_.vfioDetach(d.fd.get(), pasid);
            }
        }
        pasids_.release(pasid, ctx.vm);
    }
    ctx.pasids.clear();
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
}

const Context* Engine::find(uint64_t id) const {
    auto it = contexts_.find(id);
    return it == contexts_.end() ? nullptr : it->second.get();
}

uint64_t Engine::holderOf(const std::string& device) const {
    auto it = held_.find(device);
    return it == held_.end() ? 0 : it->second;
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
    return checkOwner(*it->second, caller);
}

Outcome<Done> Engine::release(uint64_t id, const Caller& caller) {
    if (auto access = checkAccess(id, caller); !access.ok()) {
        return access;
    }
    releaseUnchecked(id);
    return Done{};
}

void Engine::releaseUnchecked(uint64_t id) {
    auto it = contexts_.find(id);
    if (it == contexts_.end()) {
        return;
    }
    teardown(*it->second);
    for (auto h = held_.begin(); h != held_.end();) {
        h = h->second == id ? held_.erase(h) : std::next(h);
    }
    contexts_.erase(it);
}

Outcome<uint32_t> Engine::allocatePasid(uint64_t id, const std::string& device,
                                        const Caller& caller) {
    auto it = contexts_.find(id);
    if (it == contexts_.end()) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *it->second;
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
                    device + " is not in context " + std::to_string(id));
    }
    if (dev->pasidWidth == 0) {
        return fail(names::Error::NotSupported,
                    device + " cannot use PASIDs: it has no PASID capability, or its IOMMU "
                             "unit does not support PASID");
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
        auto r = kernel_.vfioAttach(dev->fd.get(), ctx.ioasId, got.pasid);
        if (!r) {
            pasids_.release(got.pasid, ctx.vm);
            return kernelFailure(r.error());
        }
    }
    ctx.pasids[got.pasid] = device;
    return got.pasid;
}

Outcome<Done> Engine::releasePasid(uint64_t id, uint32_t pasid, const Caller& caller) {
    auto it = contexts_.find(id);
    if (it == contexts_.end()) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *it->second;
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
    pasids_.release(pasid, ctx.vm);
    ctx.pasids.erase(p);
    return Done{};
}

Outcome<Done> Engine::setVirtualId(uint64_t id, const std::string& device, uint64_t virtId,
                                   const Caller& caller) {
    auto it = contexts_.find(id);
    if (it == contexts_.end()) {
        return fail(names::Error::NotFound, "no context " + std::to_string(id));
    }
    Context& ctx = *it->second;
    if (auto owner = checkOwner(ctx, caller); !owner.ok()) {
        return owner;
    }
    if (ctx.device(device) == nullptr) {
        return fail(names::Error::InvalidArgument,
                    device + " is not in context " + std::to_string(id));
    }
    for (const auto& [dev, v] : ctx.virtualIds) {
        if (v == virtId && dev != device) {
            return fail(names::Error::Busy, "virtual ID " + std::to_string(virtId) +
                                                " is already used by " + dev + " in vm " + ctx.vm);
        }
    }
    ctx.virtualIds[device] = virtId;
    return Done{};
}

std::vector<uint64_t> Engine::markDegraded() {
    std::set<std::string> present;
    for (const auto& d : host_.devices) {
        present.insert(d.address);
    }
    for (const auto& v : host_.vdpa) {
        present.insert(v.name);
    }
    for (const auto& q : host_.queues) {
        present.insert(q.name);
    }
    std::vector<uint64_t> changed;
    for (auto& [id, ctx] : contexts_) {
        bool gone =
            std::any_of(ctx->devices.begin(), ctx->devices.end(),
                        [&present](const ContextDevice& d) { return present.count(d.id) == 0; });
        ContextState next = gone ? ContextState::Degraded : ContextState::Active;
        if (next != ctx->state) {
            ctx->state = next;
            changed.push_back(id);
        }
    }
    return changed;
}

size_t Engine::pasidCount() const {
    size_t n = 0;
    for (const auto& [id, ctx] : contexts_) {
        n += ctx->pasids.size();
    }
    return n;
}

} // namespace svad::core
