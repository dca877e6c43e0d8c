// svad's configuration (/etc/svad/svad.yaml): where to look, what to load,
// and the administrator's rules for who may get which device. config/svad.yaml
// documents every key.
//
// Loading validates the whole file and reports every error with
// file:line:column and what was expected; unknown keys are errors. A Config
// is immutable once loaded: a reload builds a new one and swaps it in whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace svad::core {

enum class RuleAction : uint32_t { Allow = 1, Deny = 2 };
enum class DeviceKind : uint32_t { Pci = 1, Vdpa = 2, Queue = 4 }; // the plugin ABI's bits
enum class ModeLimit : uint32_t { Any = 0, Handoff = 1, Attached = 2 };

const char* toString(DeviceKind kind);

// What a rule's match sees of a device (a queue or vDPA device carries its parent's ids).
struct DeviceFacts {
    std::string id;
    DeviceKind kind = DeviceKind::Pci;
    std::optional<uint16_t> vendor;
    std::optional<uint16_t> device;
    std::optional<uint32_t> classCode;
    std::optional<uint32_t> group;
};

// Who asks: the VM name from the request, the uid and groups from the bus.
struct Requester {
    std::string vm;
    uid_t uid = 0;
    std::vector<gid_t> gids;
};

struct RuleMatch {
    std::vector<std::string> devices; // ids or globs
    std::optional<uint16_t> vendor;   // vendor_device "8086:0b25" or "8086:*"
    std::optional<uint16_t> device;
    std::optional<uint32_t> classValue; // class "0x088000", or a prefix "0x0880"
    uint32_t classShift = 0;            // bits dropped before comparing
    std::optional<DeviceKind> kind;
    std::optional<uint32_t> group;
    std::vector<std::string> tags;
};

struct RuleWho {
    std::vector<std::string> vms; // names or globs; empty: any
    std::vector<uid_t> uids;      // empty: any
    std::vector<std::string> groupNames;
    std::vector<gid_t> gids; // resolved from groupNames at load
    bool anyone() const { return vms.empty() && uids.empty() && gids.empty(); }
};

struct RuleLimits {
    std::optional<uint32_t> pasidQuota;  // PASIDs a VM may hold on this rule's devices
    std::optional<uint32_t> maxContexts; // contexts a VM may hold through this rule
    ModeLimit mode = ModeLimit::Any;
    bool autoBind = false;               // vfio: rebind the group to vfio-pci
    std::optional<uint32_t> sharedLimit; // idxd: contexts on one shared queue
};

struct Rule {
    std::string name;
    RuleAction action = RuleAction::Allow;
    RuleMatch match;
    RuleWho who;
    RuleLimits limits;
    int line = 0;

    bool matchesDevice(const DeviceFacts& d,
                       const std::map<std::string, std::vector<std::string>>& tags) const;
    bool matchesRequester(const Requester& r) const;
    // The options a plugin sees with a request under this rule.
    std::vector<std::pair<std::string, std::string>> pluginOptions() const;
};

// What the rules say about one device for one requester.
struct RuleDecision {
    bool allowed = false;
    const Rule* rule = nullptr; // null: the default policy decided
    std::string reason;
};

struct Config {
    std::string path; // empty: built-in defaults
    std::optional<std::string> backend;
    std::optional<std::string> sysfsRoot;
    std::optional<std::string> devRoot;
    // Where svad keeps what a restart must not lose (an absolute path). Unset:
    // the linux backend's default, /var/lib/svad; none for the sim backend.
    std::optional<std::string> stateDir;
    std::string pluginDir;
    std::string metricsAddress = "127.0.0.1:9464";
    std::string adminGroup;        // empty: root only
    std::optional<gid_t> adminGid; // resolved at load
    RuleAction defaultPolicy = RuleAction::Deny;
    uint32_t defaultPasidQuota = 256;
    std::vector<std::pair<std::string, uint32_t>> pasidQuotas; // vm glob -> quota
    std::map<std::string, std::vector<std::string>> tags;      // tag -> device globs
    // plugin name -> its section, flattened to key/value text.
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> pluginOptions;
    std::vector<Rule> rules;

    RuleDecision decide(const DeviceFacts& device, const Requester& requester) const;
    uint32_t pasidQuotaFor(const std::string& vm) const;
    bool isAdmin(uid_t uid, const std::vector<gid_t>& gids) const;
    const Rule* rule(const std::string& name) const;
};

struct ConfigLoad {
    std::shared_ptr<const Config> config; // null when there are errors
    std::vector<std::string> errors;      // "FILE:LINE:COL: message"
};

// The most a configuration may hold: the file and the text parsed.
inline constexpr size_t kMaxConfigBytes = size_t{1024} * 1024;

// Built-in defaults; pluginDir is the compiled-in plugin directory.
std::shared_ptr<const Config> defaultConfig(const std::string& pluginDir);
// Validates a configuration's text (`name` is the file it came from, for the
// errors). Every key and string must be valid UTF-8 (they appear on the bus and
// in logs), and the text at most kMaxConfigBytes. Files are read by
// linux_impl::loadConfig (svad/linux/config_file.h).
ConfigLoad parseConfig(const std::string& text, const std::string& name,
                       const std::string& defaultPluginDir);

// fnmatch(3) without flags: * ? [..] over the whole string.
bool globMatch(const std::string& pattern, const std::string& text);

} // namespace svad::core
