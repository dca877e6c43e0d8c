// svad's VFIO plugin: PCI functions for VFIO device cdevs.
//
// ALLOWs a PCI function in an IOMMU group. svad admits a function only when
// it has a VFIO cdev in a viable group, or when the rule that matched sets
// auto_bind, before it asks any plugin; the plugin repeats none of that. With
// no cdev or a group that is not viable, prepare rebinds the function and the
// group members svad names as blocking it (group_blocker_devices) to
// vfio-pci (driver_override), and release gives each back to the driver it
// had. SR-IOV VFs are handled like any function; they have no PASID
// capability of their own and use their PF's (svad passes the PF's width in
// pasid_width), which the verdict notes.
//
// Settings (plugins.vfio in svad.yaml):
//   allow_vfs: true|false   whether VFs may be handed out (default true)
#include "plugin_util.h"

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <svad/plugin.h>
#include <utility>
#include <vector>

namespace {

using svad::plugins::say;
using svad::plugins::text;

// Calls may overlap (api/svad/plugin.h): release runs on svad's release
// thread while decide and prepare go on elsewhere. The mutex guards `rebound`
// only and is never held across a host call (restore_driver can block).
struct State {
    std::atomic<bool> allowVfs{true};
    std::mutex mutex;
    // device -> the functions prepare rebound for it, with their old drivers, in order
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> rebound;
};

int decide(void* state, const svad_request* r, char* reason, size_t size) {
    auto* s = static_cast<State*>(state);
    const svad_device* d = r->device;
    if (d == nullptr || d->kind != SVAD_KIND_PCI) {
        return SVAD_IGNORE;
    }
    const std::string id = text(d->id);
    const bool isVf = !text(d->physfn).empty();
    std::string note;
    if (isVf) {
        if (!s->allowVfs) {
            say(reason, size, id + " is an SR-IOV VF and plugins.vfio.allow_vfs is false");
            return SVAD_DENY;
        }
        note = "; a VF of " + text(d->physfn) + ", sharing its PF's PASID capability (" +
               std::to_string(d->pasid_width) + " bits)";
    }
    bool needsBind = text(d->vfio_node).empty() || d->group_viable == 0;
    say(reason, size,
        (needsBind
             ? "auto_bind: group " + std::to_string(d->iommu_group) + " goes to vfio-pci for " + id
             : id + " on " + text(d->vfio_node) + ", group " + std::to_string(d->iommu_group) +
                   " viable") +
            note);
    return SVAD_ALLOW;
}

int undo(const svad_host* host, std::vector<std::pair<std::string, std::string>>& done) {
    int failures = 0;
    for (auto it = done.rbegin(); it != done.rend(); ++it) {
        char err[256] = {};
        if (host->restore_driver(host->handle, it->first.c_str(), it->second.c_str(), err,
                                 sizeof err) != 0) {
            svad::plugins::hostLog(host, SVAD_LOG_WARNING, "vfio",
                                   "could not give " + it->first + " back to " +
                                       (it->second.empty() ? "no driver" : it->second) + ": " +
                                       err);
            ++failures;
        }
    }
    done.clear();
    return failures;
}

int prepare(void* state, const svad_host* host, const svad_request* r, svad_prepared* out,
            char* err, size_t size) {
    auto* s = static_cast<State*>(state);
    const svad_device* d = r->device;
    const std::string id = text(d->id);
    std::string node = text(d->vfio_node);
    bool needsBind = node.empty() || d->group_viable == 0;
    if (needsBind) {
        if (!SVAD_HAS_FIELD(host, svad_host, vfio_node) || host->bind_driver == nullptr) {
            say(err, size, "this svad cannot rebind drivers (plugin ABI 2 needed)");
            return -ENOTSUP;
        }
        // The members to take along, by address: svad names them since ABI 3.
        // An older svad's group_blockers sentences are not parsed; a viable
        // group has none to take along.
        const bool named = SVAD_HAS_FIELD(d, svad_device, group_blocker_devices);
        if (!named && d->group_viable != 1) {
            say(err, size, "this svad cannot name a group's blockers (plugin ABI 3 needed)");
            return -ENOTSUP;
        }
        std::vector<std::string> targets;
        for (const char* const* b = named ? d->group_blocker_devices : nullptr;
             b != nullptr && *b != nullptr; ++b) {
            if (id != *b) { // a function on another driver blocks its own group: bound last
                targets.emplace_back(*b);
            }
        }
        targets.push_back(id);
        std::vector<std::pair<std::string, std::string>> done;
        for (const auto& t : targets) {
            char previous[128] = {};
            char why[256] = {};
            int rc = host->bind_driver(host->handle, t.c_str(), "vfio-pci", previous,
                                       sizeof previous, why, sizeof why);
            if (rc != 0) {
                say(err, size, "binding " + t + " to vfio-pci: " + why);
                (void)undo(host, done);
                return rc;
            }
            if (std::string(previous) != "vfio-pci") {
                done.emplace_back(t, previous);
            }
        }
        char name[64] = {};
        char why[256] = {};
        int rc = host->vfio_node(host->handle, id.c_str(), name, sizeof name, why, sizeof why);
        if (rc != 0) {
            say(err, size, std::string("after binding to vfio-pci: ") + why);
            (void)undo(host, done);
            return rc;
        }
        node = name;
        int fd = host->open_vfio_device(host->handle, node.c_str(), err, size);
        if (fd < 0) {
            (void)undo(host, done);
            return fd;
        }
        out->fd = fd;
        out->host_changed = done.empty() ? 0 : 1;
        std::lock_guard lock(s->mutex);
        s->rebound[id] = std::move(done);
        return 0;
    }
    // The cdev as sysfs names it now, not as the last scan saw it: numbers are
    // reused once a function leaves vfio-pci.
    if (SVAD_HAS_FIELD(host, svad_host, vfio_node) && host->vfio_node != nullptr) {
        char name[64] = {};
        int rc = host->vfio_node(host->handle, id.c_str(), name, sizeof name, err, size);
        if (rc != 0) {
            return rc;
        }
        node = name;
    }
    int fd = host->open_vfio_device(host->handle, node.c_str(), err, size);
    if (fd < 0) {
        return fd;
    }
    out->fd = fd;
    return 0;
}

void release(void* state, const svad_host* host, const svad_request* r) {
    auto* s = static_cast<State*>(state);
    std::vector<std::pair<std::string, std::string>> done;
    {
        std::lock_guard lock(s->mutex);
        auto it = s->rebound.find(text(r->device->id));
        if (it == s->rebound.end()) {
            return;
        }
        done = std::move(it->second);
        s->rebound.erase(it);
    }
    (void)undo(host, done);
}

int configure(void* state, const svad_option* options, size_t count, char* err, size_t size) {
    auto* s = static_cast<State*>(state);
    bool allowVfs = true;
    for (size_t i = 0; i < count; ++i) {
        std::string key = text(options[i].key);
        std::string value = text(options[i].value);
        if (key == "allow_vfs") {
            if (value != "true" && value != "false") {
                say(err, size, "allow_vfs: expected true or false, not '" + value + "'");
                return -EINVAL;
            }
            allowVfs = value == "true";
        } else {
            say(err, size, "unknown setting '" + key + "' (the vfio plugin knows allow_vfs)");
            return -EINVAL;
        }
    }
    s->allowVfs = allowVfs;
    return 0;
}

} // namespace

extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t /*hostAbi*/, svad_plugin* p,
                                                   size_t size) {
    if (!svad::plugins::fillTable<State>(p, size, "vfio", SVAD_KIND_PCI)) {
        return -ENOTSUP; // a host older than this plugin's header
    }
    p->decide = decide;
    p->prepare = prepare;
    p->release = release;
    p->configure = configure;
    return 0;
}
