// A generated host on disk (the bus tests' test host), the sim kernel and
// driver binder over it, a plugin host and an engine: the whole allocation
// path of svad below the bus.
#pragma once

#include "fixture.h"
#include "svad/core/config.h"
#include "svad/core/discovery.h"
#include "svad/core/engine.h"
#include "svad/hostgen/hostgen.h"
#include "svad/linux/sysfs_reader.h"
#include "svad/plugin_host/plugin_host.h"
#include "svad/sim/driver_binder_sim.h"
#include "svad/sim/kernel_sim.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <unistd.h>

namespace svad::test {

inline std::string fdLink(int fd) {
    char buf[512] = {};
    ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("?");
}

inline size_t openFds() {
    size_t n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) {
            ++n;
        }
        ::closedir(d);
    }
    return n;
}

class PluginPath : public ::testing::Test {
protected:
    PluginPath() {
        hostgen::writeTree(testHost(), dir_.path() + "/host");
        host_ = scan();
        sim_ = std::make_unique<sim::KernelSim>(sim::SimConfig::fromHost(host_, dev()));
        binder_ = std::make_unique<sim::DriverBinderSim>(
            sys(), dev(), *sim_,
            [this](const std::string& a) { return sim::SimConfig::pasidLog2(host_, a); });
        plugins_ = std::make_unique<plugin_host::PluginHost>(*sim_, *binder_);
        engine_ = std::make_unique<core::Engine>(*sim_, pasids_, *plugins_);
        engine_->setHost(host_);
    }
    ~PluginPath() override {
        engine_.reset();
        plugins_.reset();
    }

    std::string sys() const { return dir_.path() + "/host/sys"; }
    std::string dev() const { return dir_.path() + "/host/dev"; }
    core::Host scan() const {
        linux_impl::SysfsReader reader(sys());
        return core::discover(reader);
    }
    // Reads the host again (after a rebind), as svad does after a context that changed it.
    void rescan() {
        const uint64_t change = plugins_->hostChanges();
        host_ = scan();
        engine_->setHost(host_);
        sim_->setDevices(sim::SimConfig::fromHost(host_, dev()));
        plugins_->rescanned(change);
    }
    const core::PciDevice* pci(const std::string& address) const {
        for (const auto& d : host_.devices) {
            if (d.address == address) {
                return &d;
            }
        }
        return nullptr;
    }

    void loadOwnPlugins() { plugins_->loadDirectory(SVAD_PLUGIN_BUILD_DIR); }
    // Configuration from YAML text; fails the test on any error.
    void configure(const std::string& yaml) {
        auto load = core::parseConfig(yaml, "test.yaml", SVAD_PLUGIN_BUILD_DIR);
        ASSERT_TRUE(load.errors.empty()) << load.errors.front();
        auto errors = plugins_->configure(*load.config);
        ASSERT_TRUE(errors.empty()) << errors.front();
        engine_->setConfig(load.config);
    }

    core::AllocateRequest request(std::vector<std::string> devices, const std::string& vm = "vm-1",
                                  core::ContextMode mode = core::ContextMode::Handoff) {
        core::AllocateRequest r;
        r.vm = vm;
        r.devices = std::move(devices);
        r.mode = mode;
        r.caller = core::Caller{0, ::getpid(), ":1.7", {0}};
        return r;
    }

    TempDir dir_;
    core::Host host_;
    std::unique_ptr<sim::KernelSim> sim_;
    std::unique_ptr<sim::DriverBinderSim> binder_;
    core::PasidAllocator pasids_;
    std::unique_ptr<plugin_host::PluginHost> plugins_;
    std::unique_ptr<core::Engine> engine_;
};

} // namespace svad::test
