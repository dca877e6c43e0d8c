// Admission: what an allocation request must pass before any plugin is asked
// or anything is opened. One ordered table of named checks, run in order on
// the loop thread; the first refusal ends the request. The plugins are asked
// after all of them (Engine::build), and none of them repeats a check made here.
//
// The table (admissionChecks() lists it, in this order):
//   request checks, once per request:
//     vm-name        1 to 128 characters of letters, digits and - _ . : @
//     devices-given  at least one device
//     owner-pid      only root names another owner
//     mode           handoff or attached
//     devices-known  each name is a PCI function, a vDPA device or a work queue, listed once
//     not-held       no device is held (a shared queue may be held again)
//   device checks, for each device in the order given:
//     config-rule    the administrator's rules allow it to this requester
//     rule-mode      the rule allows the request's mode
//     rule-contexts  the rule's max_contexts for the VM is not reached
//     vfio-cdev      a PCI function has a VFIO cdev, or its rule allows auto_bind
//     iommu-group    a PCI function is in an IOMMU group
//     auto-bind      auto_bind takes only group members the rules give this requester
//     group-viable   the function's group is viable, or its rule allows auto_bind
//     vhost-vdpa     a vDPA device is bound to vhost_vdpa
//     queue-usable   a work queue is an enabled user queue with a device node
//     relatives      no relative is held elsewhere or listed earlier (see relativeClash)
#pragma once

#include "svad/core/config.h"
#include "svad/core/host_index.h"
#include "svad/core/model.h"
#include "svad/core/outcome.h"
#include "svad/core/policy.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace svad::core {

// Reserved: devices held for a VM's lifetime (ReserveDevices) with no fd handed
// out: the VMM, or libvirt for it, opens the device nodes itself.
enum class ContextMode : uint32_t { Unknown = 0, Handoff = 1, Attached = 2, Reserved = 3 };
enum class HeldKind : uint32_t { Vfio = 1, Vdpa = 2, Queue = 3 };

// "handoff" and "attached"; Unknown for anything else (the mode check names it).
// "reserved" is no option of AllocateContext: ReserveDevices sets it.
ContextMode contextModeFromName(std::string_view name);
const char* contextModeName(ContextMode mode);

struct Caller {
    uid_t uid = 0;
    pid_t pid = 0;
    std::string busName;
    std::vector<gid_t> gids{}; // primary and supplementary, from the bus or the user database
};

struct AllocateRequest {
    std::string vm;
    std::vector<std::string> devices;
    ContextMode mode = ContextMode::Handoff;
    bool faultQueue = false;
    std::optional<pid_t> ownerPid; // root only
    std::optional<uid_t> ownerUid; // ownerPid's uid, when known (else the caller's)
    Caller caller;
};

// A device of an admitted request, resolved against the host it was admitted on
// (the pointers point into that host).
struct Resolved {
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
    uint32_t holders = 0;       // contexts holding it (a shared queue), arriving ones included
    std::string plugin;         // the plugin that allowed it (filled by the plugins' turn)
};

// Who holds, or is about to hold, a device.
struct Holder {
    enum class Stage { Held, Arriving, Leaving };
    uint64_t context = 0; // 0 for an allocation still in progress
    std::string vm;
    Stage stage = Stage::Held;
};
// "held by context 3 (vm a)", "being handed to vm a (an allocation in progress)", ...
std::string describe(const Holder& h);

// What the checks may ask of the contexts: the engine answers.
class Claims {
public:
    virtual ~Claims() = default;
    // Every holder of the device, oldest first: contexts, allocations in progress,
    // contexts being released.
    virtual std::vector<Holder> holders(const std::string& device) const = 0;
    // How many contexts (arriving ones included) the VM holds through the rule.
    virtual uint32_t contextsThroughRule(const std::string& vm, const std::string& rule) const = 0;
};

struct AdmissionCheck {
    std::string_view name;
    bool perDevice = false;
};
// The table, in the order it runs.
std::span<const AdmissionCheck> admissionChecks();

// Runs the table. On success, every device resolved, with its rule (the
// pointers point into host.host()).
Outcome<std::vector<Resolved>> admit(const AllocateRequest& request, const HostIndex& host,
                                     const Config& config, const Claims& claims);

// The query a plugin gets for one device of an admitted request.
PolicyQuery policyQuery(const AllocateRequest& request, const Resolved& r);

// One audit record of a verdict (config, a plugin, or svad itself).
void auditVerdict(const AllocateRequest& request, const std::string& device,
                  const std::string& plugin, const std::string& verdict, const std::string& reason,
                  const std::string& rule);

} // namespace svad::core
