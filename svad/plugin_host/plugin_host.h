// The plugin host: loads the policy plugins (api/svad/plugin.h) from the
// configured directory and is the engine's DeviceBroker over them.
//
// Loading: every "*.so" of the directory, in byte order of the names. A file
// (or the directory) that is not owned by root (or by svad's own user) or is
// writable by group or others is refused; so is a file that does not export
// svad_plugin_init, speaks an ABI this svad does not know, leaves a required
// function out, or whose init fails. Each refusal is logged with its reason
// and listed; svad goes on with the plugins that loaded.
//
// Calls follow the threading contract of api/svad/plugin.h: decide, prepare
// and configure run on the caller's thread (svad's loop or a worker); release
// runs on the host's own release thread, because giving a device back to its
// driver can block until every open fd of it is closed (a VMM may still hold
// its copies). No lock of the host is held across a plugin call: the host's
// own locks guard only its release queue and the configure sequence, so a
// release that blocks delays no decide or prepare. Loading happens before the
// first call, so the table of loaded plugins is read without a lock. A device
// whose release changes the host is refused by decide ("being given back")
// until that release has run, so no request races its restore.
//
// Every plugin call is an exception barrier: a plugin that throws is a DENY or
// a failed prepare, never a crash. prepare must hand back an fd it opened
// through the host table in that very call; any other number is refused and
// every other fd it opened there is closed.
//
// auto_bind records: with a state store set, every rebind a plugin asks for
// (bind_driver) is recorded before it is made, with the function's driver
// and driver_override of that moment and the context being built; a restore
// (restore_driver) removes the record once it succeeded. What a plugin
// forgets to give back, or cannot because svad restarted in between (its
// memory of the rebind is gone), the host gives back itself: giveBack(context)
// after the context's releases, and at start-up for records whose context
// did not survive.
#pragma once

#include "svad/core/config.h"
#include "svad/core/policy.h"
#include "svad/ports/driver_binder.h"
#include "svad/ports/kernel.h"
#include "svad/ports/state_store.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

struct svad_plugin;
struct svad_host;

namespace svad::plugin_host {

struct PluginInfo {
    std::string name;
    std::string version; // empty when the plugin does not say (ABI 1)
    std::string path;
    uint32_t abi = 0;
    std::vector<std::string> kinds; // pci, vdpa, queue
};

struct Refusal {
    std::string path;
    std::string reason;
};

class PluginHost final : public core::DeviceBroker {
public:
    PluginHost(ports::Kernel& kernel, ports::DriverBinder& binder);
    ~PluginHost() override;
    PluginHost(const PluginHost&) = delete;
    PluginHost& operator=(const PluginHost&) = delete;

    // Loads the plugins of `dir` (see above). A missing directory is a
    // refusal of its own, not an error: svad then allows nothing.
    void loadDirectory(const std::string& dir);
    // Loads one file; the reason when it is refused.
    std::optional<std::string> loadFile(const std::string& path);

    // Hands each plugin its section of the configuration (plugins.NAME).
    // Returns the errors ("plugin vfio: ..."); on any error every plugin is
    // configured back with `previous` (when given), so a bad reload changes nothing.
    std::vector<std::string> configure(const core::Config& config,
                                       const core::Config* previous = nullptr);

    std::vector<PluginInfo> plugins() const;
    const std::vector<Refusal>& refusals() const { return refusals_; }

    core::PolicyDecision decide(const core::PolicyQuery& query) override;
    core::Outcome<core::PreparedDevice> prepare(const std::string& plugin,
                                                const core::PolicyQuery& query) override;
    void release(const std::string& plugin, const core::PolicyQuery& query) override;
    // Queues, behind the releases already queued, the restore of every function
    // still recorded as rebound for `context`.
    void giveBack(uint64_t context, const std::vector<std::string>& devices) override;

    // Where rebinds are recorded (null: nowhere). The store must be safe to
    // call from several threads (ports::LockedStateStore): prepares run on
    // workers, releases on the release thread.
    void setStateStore(ports::StateStore* store) { store_ = store; }

    // Waits until every queued release has run (tests, and svad's stop).
    void drainReleases();
    // Called on the release thread after the release of a device whose prepare
    // changed the host (a driver was given back), with the number of that
    // change: svad rescans, and then calls rescanned() with it. Until then decide
    // refuses the devices of the change: svad's view of the host is the old one.
    void setOnReleased(std::function<void(uint64_t change)> f);
    void rescanned(uint64_t change);
    // The number of the latest host change a release made (0: none yet).
    uint64_t hostChanges() const;

    // The C table handed to plugins (public for the trampolines only).
    ports::Kernel& kernel() { return kernel_; }
    ports::DriverBinder& binder() { return binder_; }
    // An fd the host table opened for the plugin during a prepare on this thread.
    static void handedOut(int fd);
    // bind_driver and restore_driver of the C table, with their records.
    ports::Result<std::string> bindRecorded(const std::string& address, const std::string& driver);
    ports::Status restoreRecorded(const std::string& address, const std::string& previous);

private:
    struct Loaded;
    Loaded* find(const std::string& name);
    void refuse(const std::string& path, const std::string& reason);
    void releaseLoop();
    // Gives back the functions recorded for `context`; true if any was.
    std::vector<std::string> giveBackNow(uint64_t context);
    std::optional<ports::AutoBindRecord> recordOf(const std::string& address);
    std::optional<std::string> unsafeDirectory(const std::string& dir) const;

    ports::Kernel& kernel_;
    ports::DriverBinder& binder_;
    ports::StateStore* store_ = nullptr;
    std::unique_ptr<svad_host> host_;
    std::vector<std::unique_ptr<Loaded>> loaded_;
    std::vector<Refusal> refusals_;

    std::mutex configureMutex_; // one configure sequence at a time
    mutable std::mutex queueMutex_;
    std::condition_variable queueCv_;
    struct PendingRelease {
        std::string plugin;
        core::PolicyQuery query;
        uint64_t giveBack = 0;            // not a plugin's release: the records of this context
        std::vector<std::string> devices; // giveBack: the context's devices
    };
    std::deque<PendingRelease> releases_;
    std::multiset<std::string> releasing_;     // device ids queued or running
    std::map<std::string, uint64_t> awaiting_; // device id -> the change a rescan must see
    uint64_t changes_ = 0;
    bool stopping_ = false;
    uint64_t queued_ = 0;   // releases queued, ever
    uint64_t finished_ = 0; // releases run, ever
    std::function<void(uint64_t)> onReleased_;
    std::thread releaser_;
};

} // namespace svad::plugin_host
