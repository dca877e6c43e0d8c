// The plugin host: loads the policy plugins (api/svad/plugin.h) from the
// configured directory and is the engine's DeviceBroker over them.
//
// Loading: every "*.so" of the directory, in byte order of the names. A file
// (or the directory) that is not owned by root (or by svad's own user) or is
// writable by group or others is refused; so is a file that does not export
// svad_plugin_init, speaks an ABI this svad does not know, leaves a required
// function out, or whose init fails. Each refusal is logged with its reason
// and listed; svad goes on with the plugins that loaded.
#pragma once

#include "svad/core/config.h"
#include "svad/core/policy.h"
#include "svad/ports/driver_binder.h"
#include "svad/ports/kernel.h"

#include <memory>
#include <optional>
#include <string>
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

    // The C table handed to plugins (public for the trampolines only).
    ports::Kernel& kernel() { return kernel_; }
    ports::DriverBinder& binder() { return binder_; }

private:
    struct Loaded;
    Loaded* find(const std::string& name);
    void refuse(const std::string& path, const std::string& reason);

    ports::Kernel& kernel_;
    ports::DriverBinder& binder_;
    std::unique_ptr<svad_host> host_;
    std::vector<std::unique_ptr<Loaded>> loaded_;
    std::vector<Refusal> refusals_;
};

} // namespace svad::plugin_host
