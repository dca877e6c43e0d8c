#include "svad/core/engine.h"

#include "svad/core/log.h"
#include "svad/core/pasid_width.h"
#include "svad/core/text.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <set>
#include <span>

namespace svad::core {

namespace {

constexpr size_t kMaxVmName = 128;

Failure fail(names::Error e, std::string message) {
    return Failure{e, std::move(message)};
}

// A kernel error as the caller sees it: the errno picks the name, the
// message says which call failed on what.
Failure kernelFailure(const ports::KernelError& e) {
    return Failure{names::errorFromErrno(e.err), e.message};
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
    uint32_t pasidWidth = 0;
    const PciDevice* pci = nullptr;
    const VdpaDevice* vdpa = nullptr;
    const SiovQueue* queue = nullptr;
    const IommuGroup* group = nullptr;
    const PciDevice* parent = nullptr;
    DeviceFacts facts;
    const Rule* rule = nullptr; // null: the default policy allowed it
    std::string plugin;         // the plugin that allowed it
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
    : kernel_(kernel), pasids_(pasids), broker_(broker), config_(defaultConfig("")) {}

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

void Engine::setConfig(std::shared_ptr<const Config> config) {
    config_ = std::move(config);
    pasids_.setDefaultQuota(config_->defaultPasidQuota);
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
    return pasidWidth(dev, dev.physfn.empty() ? nullptr : pciDevice(dev.physfn), host_.units);
}

Outcome<std::vector<Engine::Resolved>> Engine::resolve(const AllocateRequest& request) {
    std::vector<Resolved> out;
    std::set<std::string> seen;
    for (const auto& id : request.devices) {
        if (!seen.insert(id).second) {
            return fail(names::Error::InvalidArgument, "device " + echo(id) + " is listed twice");
        }
        Resolved r;
        r.id = id;
        r.facts.id = id;
        bool shared = false;
        if (const PciDevice* dev = pciDevice(id)) {
            r.kind = HeldKind::Vfio;
            r.pci = dev;
            r.pasidWidth = pasidWidthOf(*dev);
            r.facts.kind = DeviceKind::Pci;
            r.facts.vendor = dev->vendor;
            r.facts.device = dev->device;
            r.facts.classCode = dev->classCode;
            r.facts.group = dev->group;
            if (dev->group) {
                for (const auto& g : host_.groups) {
                    if (g.id == *dev->group) {
                        r.group = &g;
                    }
                }
            }
        } else if (auto v = std::find_if(host_.vdpa.begin(), host_.vdpa.end(),
                                         [&id](const VdpaDevice& x) { return x.name == id; });
                   v != host_.vdpa.end()) {
            r.kind = HeldKind::Vdpa;
            r.vdpa = &*v;
            r.parent = pciDevice(v->parentDevice);
            r.facts.kind = DeviceKind::Vdpa;
        } else if (auto q = std::find_if(host_.queues.begin(), host_.queues.end(),
                                         [&id](const SiovQueue& x) { return x.name == id; });
                   q != host_.queues.end()) {
            r.kind = HeldKind::Queue;
            r.queue = &*q;
            r.parent = pciDevice(q->parentDevice);
            r.facts.kind = DeviceKind::Queue;
            shared = q->mode == QueueMode::Shared;
        } else {
            return fail(names::Error::NotFound,
                        "no PCI device, vDPA device or work queue named '" + echo(id) + "'");
        }
        if (r.parent != nullptr) {
            r.pasidWidth = pasidWidthOf(*r.parent);
            r.facts.vendor = r.parent->vendor;
            r.facts.device = r.parent->device;
            r.facts.classCode = r.parent->classCode;
            r.facts.group = r.parent->group;
        }
        // A shared queue may be in several contexts: its plugin keeps the count.
        if (auto holder = holderOf(id); holder != 0 && !shared) {
            return fail(names::Error::Busy, id + " is held by context " + std::to_string(holder) +
                                                " (vm " + contexts_.at(holder)->vm + ")");
        }
        out.push_back(std::move(r));
    }
    return out;
}

// A device as the relatives rule sees it: a PCI function handed out whole, or
// a vDPA device or work queue living on a parent function.
struct Engine::Claim {
    std::string id;
    HeldKind kind = HeldKind::Vfio;
    const PciDevice* pci = nullptr;    // handed out whole
    const PciDevice* parent = nullptr; // the function a vDPA device or queue lives on
    uint64_t holder = 0;               // 0: the request being judged
    std::string vm;
};

const IommuGroup* Engine::groupOf(const PciDevice& dev) const {
    if (!dev.group) {
        return nullptr;
    }
    for (const auto& g : host_.groups) {
        if (g.id == *dev.group) {
            return &g;
        }
    }
    return nullptr;
}

bool Engine::governs(const PciDevice& whole, const std::string& function) const {
    if (function == whole.address ||
        std::find(whole.virtfns.begin(), whole.virtfns.end(), function) != whole.virtfns.end()) {
        return true;
    }
    const IommuGroup* g = groupOf(whole);
    return g != nullptr &&
           std::find(g->devices.begin(), g->devices.end(), function) != g->devices.end();
}

std::optional<std::string> Engine::clash(const Claim& mine, const Claim& other) const {
    if (mine.id == other.id) {
        return std::nullopt; // the same device: resolve() decides (a shared queue may be held
                             // again)
    }
    const std::string where =
        other.holder == 0
            ? std::string("also in this request")
            : "held by context " + std::to_string(other.holder) + " (vm " + other.vm + ")";
    auto what = [](const Claim& c) {
        return std::string(c.kind == HeldKind::Vdpa ? "vDPA device " : "work queue ") + c.id;
    };
    auto relation = [this](const PciDevice& a, const PciDevice& b) {
        if (a.physfn == b.address) {
            return "is a VF of " + b.address;
        }
        if (b.physfn == a.address) {
            return "is the PF of " + b.address;
        }
        return "shares IOMMU group " + (a.group ? std::to_string(*a.group) : std::string("?")) +
               " with " + b.address;
    };
    if (mine.pci != nullptr && other.pci != nullptr) {
        // One owner may hold a whole group, or a PF and its VFs, together.
        if (other.holder != 0 && (governs(*mine.pci, other.id) || governs(*other.pci, mine.id))) {
            return mine.id + " " + relation(*mine.pci, *other.pci) + ", " + where;
        }
        return std::nullopt;
    }
    if (mine.pci != nullptr && other.parent != nullptr &&
        governs(*mine.pci, other.parent->address)) {
        return mine.id + " cannot be handed out whole: " + other.parent->address + " has a " +
               what(other) + ", " + where;
    }
    if (other.pci != nullptr && mine.parent != nullptr &&
        governs(*other.pci, mine.parent->address)) {
        return mine.id + " belongs to " + mine.parent->address + ", and " + other.id +
               (other.id == mine.parent->address ? "" : ", which governs it,") +
               " is handed out whole, " + where;
    }
    return std::nullopt;
}

Outcome<Done> Engine::checkRelatives(const Resolved& r, std::span<const Resolved> earlier) const {
    auto claimOf = [](const Resolved& x) { return Claim{x.id, x.kind, x.pci, x.parent, 0, ""}; };
    const Claim mine = claimOf(r);
    // Within the request.
    for (const auto& e : earlier) {
        if (auto why = clash(mine, claimOf(e))) {
            return fail(names::Error::Busy, *why);
        }
    }
    // Against every context: only a relative can clash, so only relatives are looked up
    // (a request costs the same with ten contexts as with thousands).
    for (const auto& id : relativesOf(mine)) {
        auto held = held_.find(id);
        if (held == held_.end() || held->second.empty()) {
            continue;
        }
        const uint64_t holder = held->second.front();
        Claim other{id, HeldKind::Vfio, nullptr, nullptr, holder, contexts_.at(holder)->vm};
        if (const PciDevice* dev = pciDevice(id)) {
            other.pci = dev;
        } else if (auto v = std::find_if(host_.vdpa.begin(), host_.vdpa.end(),
                                         [&id](const VdpaDevice& x) { return x.name == id; });
                   v != host_.vdpa.end()) {
            other.kind = HeldKind::Vdpa;
            other.parent = pciDevice(v->parentDevice);
        } else if (auto q = std::find_if(host_.queues.begin(), host_.queues.end(),
                                         [&id](const SiovQueue& x) { return x.name == id; });
                   q != host_.queues.end()) {
            other.kind = HeldKind::Queue;
            other.parent = pciDevice(q->parentDevice);
        } else {
            continue; // gone from the host (a degraded context): nothing left to clash with
        }
        if (auto why = clash(mine, other)) {
            return fail(names::Error::Busy, *why);
        }
    }
    return Done{};
}

std::set<std::string> Engine::relativesOf(const Claim& c) const {
    // Every function of the family of the device's own function (its IOMMU group, its PF
    // or VFs), and every vDPA device and work queue on one of them: a superset of what
    // clash() can find against c.
    std::set<std::string> ids;
    auto addFamily = [this, &ids](const PciDevice& f) {
        ids.insert(f.address);
        ids.insert(f.virtfns.begin(), f.virtfns.end());
        if (!f.physfn.empty()) {
            ids.insert(f.physfn);
        }
        if (const IommuGroup* g = groupOf(f)) {
            ids.insert(g->devices.begin(), g->devices.end());
        }
    };
    if (c.pci != nullptr) {
        addFamily(*c.pci);
    }
    if (c.parent != nullptr) {
        addFamily(*c.parent);
    }
    std::vector<std::string> children;
    for (const auto& q : host_.queues) {
        if (ids.count(q.parentDevice) != 0) {
            children.push_back(q.name);
        }
    }
    for (const auto& v : host_.vdpa) {
        if (ids.count(v.parentDevice) != 0) {
            children.push_back(v.name);
        }
    }
    ids.insert(children.begin(), children.end());
    ids.erase(c.id);
    return ids;
}

PolicyQuery Engine::query(const AllocateRequest& request, const Resolved& r) const {
    PolicyQuery q;
    q.vm = request.vm;
    q.uid = request.caller.uid;
    q.pid = request.caller.pid;
    q.mode = request.mode == ContextMode::Attached ? RequestMode::Attached : RequestMode::Handoff;
    q.deviceId = r.id;
    q.kind = r.facts.kind;
    q.pci = r.pci;
    q.vdpa = r.vdpa;
    q.queue = r.queue;
    q.group = r.group;
    q.parent = r.parent;
    q.pasidWidth = r.pasidWidth;
    q.holders = static_cast<uint32_t>(holdersOf(r.id).size());
    if (r.rule != nullptr) {
        q.rule = r.rule->name;
        q.options = r.rule->pluginOptions();
    }
    return q;
}

void Engine::audit(const AllocateRequest& request, const std::string& device,
                   const std::string& plugin, const std::string& verdict, const std::string& reason,
                   const std::string& rule) const {
    log::Fields fields{{"VM", request.vm},
                       {"DEVICE", device},
                       {"PLUGIN", plugin},
                       {"VERDICT", verdict},
                       {"REASON", reason},
                       {"CALLER_UID", std::to_string(request.caller.uid)},
                       {"CALLER_PID", std::to_string(request.caller.pid)}};
    if (!rule.empty()) {
        fields.emplace_back("RULE", rule);
    }
    log::write(verdict == "DENY" ? log::Priority::Notice : log::Priority::Info,
               "policy " + verdict + " " + device + " for vm " + request.vm + " by " + plugin +
                   ": " + reason,
               fields);
}

Outcome<Done> Engine::judge(const AllocateRequest& request, std::vector<Resolved>& resolved) {
    Requester requester{request.vm, request.caller.uid, request.caller.gids};
    for (size_t i = 0; i < resolved.size(); ++i) {
        Resolved& r = resolved[i];
        // The administrator's rules first.
        RuleDecision rd = config_->decide(r.facts, requester);
        const std::string ruleName = rd.rule != nullptr ? rd.rule->name : "";
        if (!rd.allowed) {
            audit(request, r.id, "config", "DENY", rd.reason, ruleName);
            return Failure{names::Error::PolicyDenied, r.id + ": " + rd.reason, "config"};
        }
        r.rule = rd.rule;
        if (r.rule != nullptr) {
            const RuleLimits& lim = r.rule->limits;
            if ((lim.mode == ModeLimit::Handoff && request.mode != ContextMode::Handoff) ||
                (lim.mode == ModeLimit::Attached && request.mode != ContextMode::Attached)) {
                std::string why = "rule '" + r.rule->name + "' allows only " +
                                  (lim.mode == ModeLimit::Handoff ? "handoff" : "attached") +
                                  " mode";
                audit(request, r.id, "config", "DENY", why, ruleName);
                return Failure{names::Error::PolicyDenied, r.id + ": " + why, "config"};
            }
            if (lim.maxContexts) {
                uint32_t n = 0;
                for (const auto& [id, ctx] : contexts_) {
                    bool viaRule = ctx->vm == request.vm &&
                                   std::any_of(ctx->devices.begin(), ctx->devices.end(),
                                               [&ruleName](const ContextDevice& d) {
                                                   return d.rule == ruleName;
                                               });
                    n += viaRule ? 1 : 0;
                }
                if (n >= *lim.maxContexts) {
                    std::string why = "vm " + request.vm + " holds " + std::to_string(n) +
                                      " contexts through rule '" + ruleName + "' (max_contexts " +
                                      std::to_string(*lim.maxContexts) + ")";
                    audit(request, r.id, "config", "DENY", why, ruleName);
                    return Failure{names::Error::QuotaExceeded, r.id + ": " + why, "config"};
                }
            }
        }
        // What the kernel needs before a device can be opened at all.
        const bool autoBind = r.rule != nullptr && r.rule->limits.autoBind;
        if (r.pci != nullptr) {
            if (r.pci->vfioDevice.empty() && !autoBind) {
                return fail(names::Error::NotSupported,
                            r.id + " has no VFIO device cdev (driver: " +
                                (r.pci->driver.empty() ? "none" : r.pci->driver) +
                                "): bind it to vfio-pci first, or allow auto_bind in its rule");
            }
            if (r.group != nullptr && !r.group->viable && autoBind) {
                // auto_bind takes the blocking members from their drivers: each
                // must be one the rules give this requester too.
                for (const auto& b : r.group->blockers) {
                    const std::string& member = b.device;
                    const PciDevice* m = pciDevice(member);
                    if (m == nullptr) {
                        continue;
                    }
                    DeviceFacts mf{member,    DeviceKind::Pci, m->vendor,
                                   m->device, m->classCode,    m->group};
                    RuleDecision md = config_->decide(mf, requester);
                    if (!md.allowed) {
                        std::string why = "auto_bind would take " + member + " (" + blockerText(b) +
                                          ") from its driver, and " + md.reason;
                        audit(request, r.id, "config", "DENY", why, ruleName);
                        return Failure{names::Error::PolicyDenied, r.id + ": " + why, "config"};
                    }
                }
            }
            if (r.group != nullptr) {
                if (!r.group->viable && !autoBind) {
                    std::string why;
                    for (const auto& b : r.group->blockers) {
                        why += (why.empty() ? "" : ", ") + blockerText(b);
                    }
                    return fail(names::Error::Busy, "IOMMU group " + std::to_string(r.group->id) +
                                                        " of " + r.id + " is not viable: " + why);
                }
            }
        } else if (r.vdpa != nullptr && r.vdpa->vhostDevice.empty()) {
            return fail(names::Error::NotSupported,
                        r.id + " has no vhost-vdpa device (driver: " +
                            (r.vdpa->driver.empty() ? "none" : r.vdpa->driver) +
                            "): bind it to vhost_vdpa first");
        } else if (r.queue != nullptr &&
                   (r.queue->type != QueueType::User || r.queue->state != QueueState::Enabled ||
                    r.queue->charDevice.empty())) {
            return fail(names::Error::NotSupported, r.id + " is not an enabled user work queue");
        }

        if (auto related = checkRelatives(r, std::span<const Resolved>(resolved.data(), i));
            !related.ok()) {
            return related;
        }
        // Then the plugins: the first DENY wins, nobody allowing is a deny.
        PolicyDecision pd = broker_.decide(query(request, r));
        for (const auto& v : pd.verdicts) {
            audit(request, r.id, v.plugin, toString(v.verdict), v.reason, ruleName);
        }
        if (!pd.allowed) {
            if (pd.verdicts.empty() || pd.plugin.empty()) {
                audit(request, r.id, "svad", "DENY", pd.reason, ruleName);
            }
            return Failure{names::Error::PolicyDenied, r.id + ": " + pd.reason,
                           pd.plugin.empty() ? "none" : pd.plugin};
        }
        r.plugin = pd.plugin;
    }
    return Done{};
}

Outcome<Context*> Engine::allocate(const AllocateRequest& request, uint64_t nowUsec) {
    if (!validVmName(request.vm)) {
        return fail(names::Error::InvalidArgument,
                    "vm name '" + echo(request.vm) +
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
    if (auto judged = judge(request, resolved.value()); !judged.ok()) {
        return judged.failure();
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
        dev.plugin = r.plugin;
        dev.rule = r.rule != nullptr ? r.rule->name : "";
        // The plugin opens and prepares the device through the kernel port.
        PolicyQuery q = query(request, r);
        dev.options = q.options;
        auto prepared = broker_.prepare(r.plugin, q);
        if (!prepared.ok()) {
            teardown(*ctx);
            return prepared.failure();
        }
        dev.fd = std::move(prepared.value().fd);
        dev.vdpaGroups = prepared.value().vdpaGroups;
        dev.vdpaAddressSpaces = prepared.value().vdpaAddressSpaces;
        ctx->hostChanged = ctx->hostChanged || prepared.value().hostChanged;
        if (r.kind == HeldKind::Vfio && request.mode == ContextMode::Attached) {
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
        held_[d.id].push_back(ctx->id);
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
        broker_.release(d.plugin, q);
        d.plugin.clear();
    }
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
        std::erase(h->second, id);
        h = h->second.empty() ? held_.erase(h) : std::next(h);
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
