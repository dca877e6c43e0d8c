// What the engine asks of the policy plugins. The plugin host (svad/plugin_host)
// implements it over the C plugin ABI (api/svad/plugin.h); tests may
// implement it directly.
//
// For every device of a request, every plugin that handles the device's kind
// is asked; the first DENY wins; when nobody allows, the answer is deny. The
// plugin that allowed first prepares the device (opens it through the
// kernel port) and is told when the device is released.
#pragma once

#include "svad/core/config.h"
#include "svad/core/model.h"
#include "svad/core/outcome.h"
#include "svad/ports/kernel.h"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace svad::core {

enum class Verdict : uint32_t { Ignore = 0, Allow = 1, Deny = 2 };
const char* toString(Verdict v);

enum class RequestMode : uint32_t { Handoff = 1, Attached = 2, Reserved = 3 };

// One device of one request, with what svad knows of it.
struct PolicyQuery {
    std::string vm;
    uid_t uid = 0;
    pid_t pid = 0;
    RequestMode mode = RequestMode::Handoff;
    std::string deviceId;
    DeviceKind kind = DeviceKind::Pci;
    // Whichever applies to the kind; all may be null on release (the device is gone).
    const PciDevice* pci = nullptr;
    const VdpaDevice* vdpa = nullptr;
    const SiovQueue* queue = nullptr;
    const IommuGroup* group = nullptr;
    const PciDevice* parent = nullptr; // the parent function of a vDPA device or queue
    uint32_t pasidWidth = 0;
    uint32_t holders = 0; // contexts holding the device now
    std::string rule;     // the configuration rule that let it through, empty: default policy
    std::vector<std::pair<std::string, std::string>> options; // the rule's options for plugins
    bool hostChanged = false; // on release: the device's prepare changed the host
    uint64_t context = 0;     // the context the device is prepared for or released from
};

struct PluginVerdict {
    std::string plugin;
    Verdict verdict = Verdict::Ignore;
    std::string reason;
};

struct PolicyDecision {
    bool allowed = false;
    std::string plugin; // the plugin whose verdict decided (first DENY, else first ALLOW)
    std::string reason;
    std::vector<PluginVerdict> verdicts; // every plugin asked, in order
};

struct PreparedDevice {
    ports::UniqueFd fd;
    uint32_t vdpaGroups = 0;
    uint32_t vdpaAddressSpaces = 0;
    bool hostChanged = false; // a driver was rebound: the host needs a rescan
};

class DeviceBroker {
public:
    virtual ~DeviceBroker() = default;
    virtual PolicyDecision decide(const PolicyQuery& query) = 0;
    // Opens and prepares the device through `plugin` (one that allowed it).
    virtual Outcome<PreparedDevice> prepare(const std::string& plugin,
                                            const PolicyQuery& query) = 0;
    // svad has closed its fd for the device: `plugin` undoes what prepare changed.
    virtual void release(const std::string& plugin, const PolicyQuery& query) = 0;
    // After the releases of a context's devices: gives back any driver still
    // rebound for it (one a plugin forgot, or cannot know of after svad restarted).
    // `devices`: the context's, refused to others until the host is read again
    // when anything was given back.
    virtual void giveBack(uint64_t context, const std::vector<std::string>& devices) {
        (void)context;
        (void)devices;
    }
};

} // namespace svad::core
