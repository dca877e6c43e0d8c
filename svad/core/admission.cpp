#include "svad/core/admission.h"

#include "svad/core/log.h"
#include "svad/core/text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <set>

namespace svad::core {

namespace {

constexpr size_t kMaxVmName = 128;

Failure fail(names::Error e, std::string message) {
    return Failure{e, std::move(message), {}};
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

// What the checks work on.
struct Admission {
    const AllocateRequest& request;
    const HostIndex& host;
    const Config& config;
    const Claims& claims;
    Requester requester;
    std::vector<Resolved> resolved;
};

// A device as the relatives rule sees it: a PCI function handed out whole, or
// a vDPA device or work queue living on a parent function.
struct Claim {
    std::string id;
    HeldKind kind = HeldKind::Vfio;
    const PciDevice* pci = nullptr;    // handed out whole
    const PciDevice* parent = nullptr; // the function a vDPA device or queue lives on
    std::optional<Holder> holder;      // none: the request being judged
};

bool governs(const HostIndex& host, const PciDevice& whole, const std::string& function) {
    if (function == whole.address ||
        std::find(whole.virtfns.begin(), whole.virtfns.end(), function) != whole.virtfns.end()) {
        return true;
    }
    const IommuGroup* g = host.groupOf(whole);
    return g != nullptr &&
           std::find(g->devices.begin(), g->devices.end(), function) != g->devices.end();
}

// One rule for relatives, applied alike to the devices held by other contexts
// and to those earlier in the same request:
//  - a PCI function handed out whole takes with it every function it governs
//    (the members of its IOMMU group; for a PF, its VFs), so no vDPA device or
//    work queue on any of them may be handed out beside it, neither in another
//    context nor in the same one;
//  - functions that govern one another (one IOMMU group, PF and VF) may be held
//    together only by one context.
// A shared queue in several contexts and sibling queues or vDPA devices are not relatives.
std::optional<std::string> relativeClash(const HostIndex& host, const Claim& mine,
                                         const Claim& other) {
    if (mine.id == other.id) {
        return std::nullopt; // the same device: not-held decides (a shared queue may be held again)
    }
    const std::string where =
        other.holder ? describe(*other.holder) : std::string("also in this request");
    auto what = [](const Claim& c) {
        return std::string(c.kind == HeldKind::Vdpa ? "vDPA device " : "work queue ") + c.id;
    };
    auto relation = [](const PciDevice& a, const PciDevice& b) {
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
        if (other.holder &&
            (governs(host, *mine.pci, other.id) || governs(host, *other.pci, mine.id))) {
            return mine.id + " " + relation(*mine.pci, *other.pci) + ", " + where;
        }
        return std::nullopt;
    }
    if (mine.pci != nullptr && other.parent != nullptr &&
        governs(host, *mine.pci, other.parent->address)) {
        return mine.id + " cannot be handed out whole: " + other.parent->address + " has a " +
               what(other) + ", " + where;
    }
    if (other.pci != nullptr && mine.parent != nullptr &&
        governs(host, *other.pci, mine.parent->address)) {
        return mine.id + " belongs to " + mine.parent->address + ", and " + other.id +
               (other.id == mine.parent->address ? "" : ", which governs it,") +
               " is handed out whole, " + where;
    }
    return std::nullopt;
}

// Every function of the family of the device's own function (its IOMMU group, its PF
// or VFs), and every vDPA device and work queue on one of them: a superset of what
// relativeClash() can find against c.
std::set<std::string> relativesOf(const HostIndex& host, const Claim& c) {
    std::set<std::string> ids;
    auto addFamily = [&host, &ids](const PciDevice& f) {
        ids.insert(f.address);
        ids.insert(f.virtfns.begin(), f.virtfns.end());
        if (!f.physfn.empty()) {
            ids.insert(f.physfn);
        }
        if (const IommuGroup* g = host.groupOf(f)) {
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
    for (const auto& function : ids) {
        for (std::string_view child : host.childrenOf(function)) {
            children.emplace_back(child);
        }
    }
    ids.insert(children.begin(), children.end());
    ids.erase(c.id);
    return ids;
}

Failure configDeny(const Admission& a, const Resolved& r, const std::string& why,
                   names::Error error = names::Error::PolicyDenied) {
    const std::string rule = r.rule != nullptr ? r.rule->name : "";
    auditVerdict(a.request, r.id, "config", "DENY", why, rule);
    return Failure{error, r.id + ": " + why, "config"};
}

bool autoBindOf(const Resolved& r) {
    return r.rule != nullptr && r.rule->limits.autoBind;
}

// ---- request checks -------------------------------------------------------------

Outcome<Done> checkVmName(Admission& a) {
    if (!validVmName(a.request.vm)) {
        return fail(names::Error::InvalidArgument,
                    "vm name '" + echo(a.request.vm) +
                        "' must be 1 to 128 characters of letters, digits and - _ . : @");
    }
    return Done{};
}

Outcome<Done> checkDevicesGiven(Admission& a) {
    if (a.request.devices.empty()) {
        return fail(names::Error::InvalidArgument, "no devices given");
    }
    return Done{};
}

Outcome<Done> checkOwnerPid(Admission& a) {
    if (a.request.ownerPid && a.request.caller.uid != 0) {
        return fail(names::Error::PermissionDenied, "only root may name another owner_pid");
    }
    return Done{};
}

Outcome<Done> checkMode(Admission& a) {
    if (a.request.mode == ContextMode::Reserved) {
        if (a.request.faultQueue) {
            return fail(names::Error::InvalidArgument,
                        "a reservation hands out no fds: it has no fault queue");
        }
        return Done{};
    }
    if (a.request.mode != ContextMode::Handoff && a.request.mode != ContextMode::Attached) {
        return fail(names::Error::InvalidArgument, "option 'mode' must be 'handoff' or 'attached'");
    }
    return Done{};
}

Outcome<Done> checkDevicesKnown(Admission& a) {
    std::set<std::string> seen;
    for (const auto& id : a.request.devices) {
        if (!seen.insert(id).second) {
            return fail(names::Error::InvalidArgument, "device " + echo(id) + " is listed twice");
        }
        Resolved r;
        r.id = id;
        r.facts.id = id;
        if (const PciDevice* dev = a.host.pci(id)) {
            r.kind = HeldKind::Vfio;
            r.pci = dev;
            r.pasidWidth = a.host.pasidWidth(*dev);
            r.facts.kind = DeviceKind::Pci;
            r.facts.vendor = dev->vendor;
            r.facts.device = dev->device;
            r.facts.classCode = dev->classCode;
            r.facts.group = dev->group;
            r.group = a.host.groupOf(*dev);
        } else if (const VdpaDevice* v = a.host.vdpa(id)) {
            r.kind = HeldKind::Vdpa;
            r.vdpa = v;
            r.parent = a.host.pci(v->parentDevice);
            r.facts.kind = DeviceKind::Vdpa;
        } else if (const SiovQueue* q = a.host.queue(id)) {
            r.kind = HeldKind::Queue;
            r.queue = q;
            r.parent = a.host.pci(q->parentDevice);
            r.facts.kind = DeviceKind::Queue;
        } else {
            return fail(names::Error::NotFound,
                        "no PCI device, vDPA device or work queue named '" + echo(id) + "'");
        }
        if (r.parent != nullptr) {
            r.pasidWidth = a.host.pasidWidth(*r.parent);
            r.facts.vendor = r.parent->vendor;
            r.facts.device = r.parent->device;
            r.facts.classCode = r.parent->classCode;
            r.facts.group = r.parent->group;
        }
        a.resolved.push_back(std::move(r));
    }
    return Done{};
}

Outcome<Done> checkNotHeld(Admission& a) {
    for (auto& r : a.resolved) {
        const auto holders = a.claims.holders(r.id);
        r.holders = static_cast<uint32_t>(holders.size());
        // A shared queue may be in several contexts: its plugin keeps the count.
        const bool shared = r.queue != nullptr && r.queue->mode == QueueMode::Shared;
        if (holders.empty() || shared) {
            continue;
        }
        const Holder& h = holders.front();
        if (h.stage == Holder::Stage::Held) {
            // The words callers and tests have always seen for a held device.
            return fail(names::Error::Busy, r.id + " is held by context " +
                                                std::to_string(h.context) + " (vm " + h.vm + ")");
        }
        return fail(names::Error::Busy, r.id + " is " + describe(h));
    }
    return Done{};
}

// ---- device checks --------------------------------------------------------------

Outcome<Done> checkConfigRule(Admission& a, Resolved& r) {
    RuleDecision rd = a.config.decide(r.facts, a.requester);
    r.rule = rd.rule;
    if (!rd.allowed) {
        return configDeny(a, r, rd.reason);
    }
    return Done{};
}

Outcome<Done> checkRuleMode(Admission& a, Resolved& r) {
    if (r.rule == nullptr) {
        return Done{};
    }
    const ModeLimit lim = r.rule->limits.mode;
    // A reservation is a handoff in this sense: the VMM binds the device itself.
    const ContextMode mode =
        a.request.mode == ContextMode::Reserved ? ContextMode::Handoff : a.request.mode;
    if ((lim == ModeLimit::Handoff && mode != ContextMode::Handoff) ||
        (lim == ModeLimit::Attached && mode != ContextMode::Attached)) {
        return configDeny(a, r,
                          "rule '" + r.rule->name + "' allows only " +
                              (lim == ModeLimit::Handoff ? "handoff" : "attached") + " mode");
    }
    return Done{};
}

Outcome<Done> checkRuleContexts(Admission& a, Resolved& r) {
    if (r.rule == nullptr || !r.rule->limits.maxContexts) {
        return Done{};
    }
    const uint32_t max = *r.rule->limits.maxContexts;
    const uint32_t n = a.claims.contextsThroughRule(a.request.vm, r.rule->name);
    if (n >= max) {
        return configDeny(a, r,
                          "vm " + a.request.vm + " holds " + std::to_string(n) +
                              " contexts through rule '" + r.rule->name + "' (max_contexts " +
                              std::to_string(max) + ")",
                          names::Error::QuotaExceeded);
    }
    return Done{};
}

Outcome<Done> checkVfioCdev(Admission& /*a*/, Resolved& r) {
    if (r.pci != nullptr && r.pci->vfioDevice.empty() && !autoBindOf(r)) {
        return fail(names::Error::NotSupported,
                    r.id + " has no VFIO device cdev (driver: " +
                        (r.pci->driver.empty() ? "none" : r.pci->driver) +
                        "): bind it to vfio-pci first, or allow auto_bind in its rule");
    }
    return Done{};
}

Outcome<Done> checkIommuGroup(Admission& /*a*/, Resolved& r) {
    if (r.pci != nullptr && r.group == nullptr) {
        return fail(names::Error::NotSupported,
                    r.id + " is in no IOMMU group: VFIO cannot isolate it");
    }
    return Done{};
}

Outcome<Done> checkAutoBind(Admission& a, Resolved& r) {
    if (r.group == nullptr || r.group->viable || !autoBindOf(r)) {
        return Done{};
    }
    // auto_bind takes the blocking members from their drivers: each must be one
    // the rules give this requester too.
    for (const auto& b : r.group->blockers) {
        const std::string& member = b.device;
        const PciDevice* m = a.host.pci(member);
        if (m == nullptr) {
            continue;
        }
        DeviceFacts mf{member, DeviceKind::Pci, m->vendor, m->device, m->classCode, m->group};
        RuleDecision md = a.config.decide(mf, a.requester);
        if (!md.allowed) {
            return configDeny(a, r,
                              "auto_bind would take " + member + " (" + blockerText(b) +
                                  ") from its driver, and " + md.reason);
        }
    }
    return Done{};
}

Outcome<Done> checkGroupViable(Admission& /*a*/, Resolved& r) {
    if (r.group == nullptr || r.group->viable || autoBindOf(r)) {
        return Done{};
    }
    std::string why;
    for (const auto& b : r.group->blockers) {
        why += (why.empty() ? "" : ", ") + blockerText(b);
    }
    return fail(names::Error::Busy, "IOMMU group " + std::to_string(r.group->id) + " of " + r.id +
                                        " is not viable: " + why);
}

Outcome<Done> checkVhostVdpa(Admission& /*a*/, Resolved& r) {
    if (r.vdpa != nullptr && r.vdpa->vhostDevice.empty()) {
        return fail(names::Error::NotSupported,
                    r.id + " has no vhost-vdpa device (driver: " +
                        (r.vdpa->driver.empty() ? "none" : r.vdpa->driver) +
                        "): bind it to vhost_vdpa first");
    }
    return Done{};
}

Outcome<Done> checkQueueUsable(Admission& /*a*/, Resolved& r) {
    if (r.queue != nullptr &&
        (r.queue->type != QueueType::User || r.queue->state != QueueState::Enabled ||
         r.queue->charDevice.empty())) {
        return fail(names::Error::NotSupported, r.id + " is not an enabled user work queue");
    }
    return Done{};
}

Outcome<Done> checkRelatives(Admission& a, Resolved& r) {
    auto claimOf = [](const Resolved& x) {
        return Claim{x.id, x.kind, x.pci, x.parent, std::nullopt};
    };
    const Claim mine = claimOf(r);
    // Within the request: the devices before this one.
    for (const auto& e : a.resolved) {
        if (&e == &r) {
            break;
        }
        if (auto why = relativeClash(a.host, mine, claimOf(e))) {
            return fail(names::Error::Busy, *why);
        }
    }
    // Against every context: only a relative can clash, so only relatives are looked up
    // (a request costs the same with ten contexts as with thousands).
    for (const auto& id : relativesOf(a.host, mine)) {
        const auto holders = a.claims.holders(id);
        if (holders.empty()) {
            continue;
        }
        Claim other{id, HeldKind::Vfio, nullptr, nullptr, holders.front()};
        if (const PciDevice* dev = a.host.pci(id)) {
            other.pci = dev;
        } else if (const VdpaDevice* v = a.host.vdpa(id)) {
            other.kind = HeldKind::Vdpa;
            other.parent = a.host.pci(v->parentDevice);
        } else if (const SiovQueue* q = a.host.queue(id)) {
            other.kind = HeldKind::Queue;
            other.parent = a.host.pci(q->parentDevice);
        } else {
            continue; // gone from the host (a degraded context): nothing left to clash with
        }
        if (auto why = relativeClash(a.host, mine, other)) {
            return fail(names::Error::Busy, *why);
        }
    }
    return Done{};
}

using RequestFn = Outcome<Done> (*)(Admission&);
using DeviceFn = Outcome<Done> (*)(Admission&, Resolved&);

struct RequestRow {
    AdmissionCheck check;
    RequestFn run;
};
struct DeviceRow {
    AdmissionCheck check;
    DeviceFn run;
};

constexpr std::array<RequestRow, 6> kRequestChecks{{
    {{"vm-name", false}, checkVmName},
    {{"devices-given", false}, checkDevicesGiven},
    {{"owner-pid", false}, checkOwnerPid},
    {{"mode", false}, checkMode},
    {{"devices-known", false}, checkDevicesKnown},
    {{"not-held", false}, checkNotHeld},
}};

constexpr std::array<DeviceRow, 10> kDeviceChecks{{
    {{"config-rule", true}, checkConfigRule},
    {{"rule-mode", true}, checkRuleMode},
    {{"rule-contexts", true}, checkRuleContexts},
    {{"vfio-cdev", true}, checkVfioCdev},
    {{"iommu-group", true}, checkIommuGroup},
    {{"auto-bind", true}, checkAutoBind},
    {{"group-viable", true}, checkGroupViable},
    {{"vhost-vdpa", true}, checkVhostVdpa},
    {{"queue-usable", true}, checkQueueUsable},
    {{"relatives", true}, checkRelatives},
}};

const std::array<AdmissionCheck, kRequestChecks.size() + kDeviceChecks.size()> kTable = [] {
    std::array<AdmissionCheck, kRequestChecks.size() + kDeviceChecks.size()> t{};
    size_t i = 0;
    for (const auto& r : kRequestChecks) {
        t[i++] = r.check;
    }
    for (const auto& d : kDeviceChecks) {
        t[i++] = d.check;
    }
    return t;
}();

} // namespace

ContextMode contextModeFromName(std::string_view name) {
    if (name == "handoff") {
        return ContextMode::Handoff;
    }
    if (name == "attached") {
        return ContextMode::Attached;
    }
    return ContextMode::Unknown;
}

const char* contextModeName(ContextMode mode) {
    switch (mode) {
    case ContextMode::Handoff:
        return "handoff";
    case ContextMode::Attached:
        return "attached";
    case ContextMode::Reserved:
        return "reserved";
    case ContextMode::Unknown:
        break;
    }
    return "unknown";
}

std::string describe(const Holder& h) {
    switch (h.stage) {
    case Holder::Stage::Held:
        return "held by context " + std::to_string(h.context) + " (vm " + h.vm + ")";
    case Holder::Stage::Arriving:
        return "being handed to vm " + h.vm + " (an allocation in progress)";
    case Holder::Stage::Leaving:
        return "being released from context " + std::to_string(h.context) + " (vm " + h.vm + ")";
    }
    return "held";
}

std::span<const AdmissionCheck> admissionChecks() {
    return kTable;
}

Outcome<std::vector<Resolved>> admit(const AllocateRequest& request, const HostIndex& host,
                                     const Config& config, const Claims& claims) {
    Admission a{request,
                host,
                config,
                claims,
                Requester{request.vm, request.caller.uid, request.caller.gids},
                {}};
    for (const auto& row : kRequestChecks) {
        if (auto r = row.run(a); !r.ok()) {
            return r.failure();
        }
    }
    for (auto& r : a.resolved) {
        for (const auto& row : kDeviceChecks) {
            if (auto outcome = row.run(a, r); !outcome.ok()) {
                return outcome.failure();
            }
        }
    }
    return std::move(a.resolved);
}

PolicyQuery policyQuery(const AllocateRequest& request, const Resolved& r) {
    PolicyQuery q;
    q.vm = request.vm;
    q.uid = request.caller.uid;
    q.pid = request.caller.pid;
    q.mode = request.mode == ContextMode::Attached   ? RequestMode::Attached
             : request.mode == ContextMode::Reserved ? RequestMode::Reserved
                                                     : RequestMode::Handoff;
    q.deviceId = r.id;
    q.kind = r.facts.kind;
    q.pci = r.pci;
    q.vdpa = r.vdpa;
    q.queue = r.queue;
    q.group = r.group;
    q.parent = r.parent;
    q.pasidWidth = r.pasidWidth;
    q.holders = r.holders;
    if (r.rule != nullptr) {
        q.rule = r.rule->name;
        q.options = r.rule->pluginOptions();
    }
    return q;
}

void auditVerdict(const AllocateRequest& request, const std::string& device,
                  const std::string& plugin, const std::string& verdict, const std::string& reason,
                  const std::string& rule) {
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

} // namespace svad::core
