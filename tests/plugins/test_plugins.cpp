// svad's own plugins (vfio, vdpa, idxd) on the whole allocation path below the
// bus: configuration rules, the plugin host, the engine and the sim kernel
// over a generated host tree.
#include "plugin_fixture.h"
#include "svad/ports/sysfs_pci.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

namespace svad::test {
namespace {

using core::ContextMode;
using names::Error;

class OwnPlugins : public PluginPath {
protected:
    OwnPlugins() { loadOwnPlugins(); }

    core::Failure refusal(const core::AllocateRequest& r) {
        auto out = engine_->allocate(r, 1);
        EXPECT_FALSE(out.ok());
        return out.ok() ? core::Failure{} : out.failure();
    }
    core::Context* allocated(const core::AllocateRequest& r) {
        auto out = engine_->allocate(r, 1);
        EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.failure().message);
        return out.ok() ? out.value() : nullptr;
    }
    std::string driverOf(const std::string& address) const {
        return sysfs_pci::currentDriver(sys() + "/bus/pci/devices/" + address);
    }
};

TEST_F(OwnPlugins, VfioHandsOutAFunctionWithItsCdevInBothModes) {
    configure("default_policy: allow\n");
    // A VF of the NIC, on vfio-pci with its cdev; VFs use the PF's PASID capability.
    const std::string vf = pci("0000:3b:00.0")->virtfns.at(0);
    core::Context* ctx = allocated(request({vf}));
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(ctx->devices[0].plugin, "vfio");
    EXPECT_NE(fdLink(ctx->devices[0].fd.get()).find("svad-sim:vfio:vfio"), std::string::npos);
    engine_->releaseUnchecked(ctx->id);
    ctx = allocated(request({vf}, "vm-1", ContextMode::Attached));
    ASSERT_NE(ctx, nullptr);
    EXPECT_TRUE(ctx->devices[0].attached);
    engine_->releaseUnchecked(ctx->id);

    configure("default_policy: allow\nplugins:\n  vfio:\n    allow_vfs: false\n");
    auto f = refusal(request({vf}));
    EXPECT_EQ(f.error, Error::PolicyDenied);
    EXPECT_NE(f.message.find("allow_vfs is false"), std::string::npos) << f.message;
}

TEST_F(OwnPlugins, VfioRefusesWithoutCdevOrViableGroupUnlessAutoBind) {
    configure("default_policy: allow\n");
    auto noCdev = refusal(request({"0000:5e:00.0"}));
    EXPECT_EQ(noCdev.error, Error::NotSupported);
    EXPECT_NE(noCdev.message.find("auto_bind"), std::string::npos);
    auto notViable = refusal(request({"0000:17:00.0"}));
    EXPECT_EQ(notViable.error, Error::Busy);
    EXPECT_NE(notViable.message.find("0000:17:00.1"), std::string::npos) << notViable.message;
}

TEST_F(OwnPlugins, AutoBindRebindsTheFunctionAndGivesItBackOnRelease) {
    configure(R"(default_policy: deny
rules:
  - name: nvme-to-vm
    match: {device: "0000:5e:00.0"}
    allow: {vms: [vm-1]}
    limits: {auto_bind: true}
)");
    ASSERT_EQ(driverOf("0000:5e:00.0"), "nvme");
    core::Context* ctx = allocated(request({"0000:5e:00.0"}));
    ASSERT_NE(ctx, nullptr);
    EXPECT_TRUE(ctx->hostChanged);
    EXPECT_EQ(ctx->devices[0].rule, "nvme-to-vm");
    EXPECT_EQ(driverOf("0000:5e:00.0"), "vfio-pci");
    EXPECT_NE(fdLink(ctx->devices[0].fd.get()).find("svad-sim:vfio:vfio"), std::string::npos);
    // A rescan sees what the kernel would show: the cdev, the driver.
    rescan();
    EXPECT_FALSE(pci("0000:5e:00.0")->vfioDevice.empty());
    EXPECT_EQ(pci("0000:5e:00.0")->driver, "vfio-pci");

    engine_->releaseUnchecked(ctx->id);
    plugins_->drainReleases(); // given back on the release thread
    EXPECT_EQ(driverOf("0000:5e:00.0"), "nvme");
    rescan();
    EXPECT_TRUE(pci("0000:5e:00.0")->vfioDevice.empty());
    EXPECT_EQ(pci("0000:5e:00.0")->driverOverride, "");
}

// A release whose restore blocks (the VMM still holds its fds) holds no lock that
// decide or prepare wait on: another device is allocated meanwhile, promptly.
TEST_F(OwnPlugins, ABlockedReleaseDelaysNoOtherAllocation) {
    configure(R"(default_policy: allow
rules:
  - name: nvme-to-vm
    match: {device: "0000:5e:00.0"}
    limits: {auto_bind: true}
)");
    core::Context* nvme = allocated(request({"0000:5e:00.0"}));
    ASSERT_NE(nvme, nullptr);
    ASSERT_TRUE(nvme->hostChanged);
    // The sim's binder blocks each restore for 2 s (driver_binder_sim.h).
    std::filesystem::create_directories(sys() + "/.sim");
    { std::ofstream(sys() + "/.sim/restore_delay_ms") << "2000\n"; }
    using Clock = std::chrono::steady_clock;
    const auto released = Clock::now();
    engine_->releaseUnchecked(nvme->id);
    // Give the release thread time to enter the blocked restore.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::string vf = pci("0000:3b:00.0")->virtfns.at(0);
    const auto asked = Clock::now();
    core::Context* other = allocated(request({vf}, "vm-2"));
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked).count();
    std::cout << "[ measured ] allocation during a 2 s restore: " << took << " ms\n";
    RecordProperty("allocation_during_blocked_restore_ms", std::to_string(took));
    ASSERT_NE(other, nullptr);
    EXPECT_LT(took, 100);
    // The release itself still runs to its end, and gives the function back.
    EXPECT_EQ(driverOf("0000:5e:00.0"), "vfio-pci");
    plugins_->drainReleases();
    EXPECT_GE(Clock::now() - released, std::chrono::milliseconds(2000));
    EXPECT_EQ(driverOf("0000:5e:00.0"), "nvme");
}

TEST_F(OwnPlugins, AutoBindTakesTheGroupsBlockingMembersAlong) {
    configure(R"(rules:
  - name: gpu
    match: {vendor_device: "10de:2236"}
    limits: {auto_bind: true, mode: handoff}
)");
    ASSERT_EQ(driverOf("0000:17:00.1"), "snd_hda_intel");
    // The audio function would be taken from its driver, and no rule gives it out.
    auto unlisted = refusal(request({"0000:17:00.0"}));
    EXPECT_EQ(unlisted.error, Error::PolicyDenied);
    EXPECT_NE(unlisted.message.find("auto_bind would take 0000:17:00.1"), std::string::npos)
        << unlisted.message;
    EXPECT_EQ(driverOf("0000:17:00.1"), "snd_hda_intel");
    configure(R"(rules:
  - name: gpu
    match: {vendor_device: "10de:*"}
    limits: {auto_bind: true, mode: handoff}
)");
    core::Context* ctx = allocated(request({"0000:17:00.0"}));
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(driverOf("0000:17:00.1"), "vfio-pci");
    rescan();
    for (const auto& g : host_.groups) {
        if (g.id == 3) {
            EXPECT_TRUE(g.viable);
        }
    }
    // The rule allows only handoff.
    engine_->releaseUnchecked(ctx->id);
    plugins_->drainReleases();
    EXPECT_EQ(driverOf("0000:17:00.1"), "snd_hda_intel");
    auto attached = refusal(request({"0000:17:00.0"}, "vm-1", ContextMode::Attached));
    EXPECT_EQ(attached.error, Error::PolicyDenied);
    EXPECT_NE(attached.message.find("allows only handoff"), std::string::npos);
}

TEST_F(OwnPlugins, VdpaOpensTheVhostDeviceAndReportsGroupsAndSpaces) {
    configure("default_policy: allow\n");
    core::Context* ctx = allocated(request({"vdpa0", "vdpa-sim0"}));
    ASSERT_NE(ctx, nullptr);
    for (const auto& d : ctx->devices) {
        EXPECT_EQ(d.plugin, "vdpa");
        EXPECT_EQ(d.vdpaGroups, 2U);
        EXPECT_EQ(d.vdpaAddressSpaces, 2U);
        EXPECT_NE(fdLink(d.fd.get()).find("svad-sim:vhost-vdpa:"), std::string::npos);
    }
}

TEST_F(OwnPlugins, IdxdHandsOutEnabledUserQueuesDedicatedOnceSharedUpToTheLimit) {
    configure(R"(default_policy: allow
plugins:
  idxd: {shared_limit: 3}
rules:
  - name: shared-two
    match: {device: wq0.1}
    allow: {vms: ["small-*"]}
    limits: {shared_limit: 2}
)");
    ASSERT_NE(allocated(request({"wq0.0"}, "vm-a")), nullptr);
    EXPECT_EQ(refusal(request({"wq0.0"}, "vm-b")).error, Error::Busy);
    EXPECT_EQ(refusal(request({"wq0.2"}, "vm-b")).error, Error::NotSupported);

    // The rule's limit (2) for small-* VMs, the plugin's own (3) for the others.
    ASSERT_NE(allocated(request({"wq0.1"}, "small-1")), nullptr);
    ASSERT_NE(allocated(request({"wq0.1"}, "small-2")), nullptr);
    auto third = refusal(request({"wq0.1"}, "small-3"));
    EXPECT_EQ(third.error, Error::PolicyDenied);
    EXPECT_NE(third.message.find("shared_limit 2"), std::string::npos) << third.message;
    ASSERT_NE(allocated(request({"wq0.1"}, "big-1")), nullptr);
    auto fourth = refusal(request({"wq0.1"}, "big-2"));
    EXPECT_NE(fourth.message.find("shared_limit 3"), std::string::npos) << fourth.message;
    EXPECT_EQ(engine_->holdersOf("wq0.1").size(), 3U);
}

TEST_F(OwnPlugins, RulesDecideBeforePluginsAndLimitContexts) {
    configure(R"(default_policy: deny
rules:
  - name: no-vdpa-for-guests
    action: deny
    match: {kind: vdpa}
    allow: {vms: ["guest-*"]}
  - name: web
    match: {kind: queue}
    allow: {vms: ["web-*"], uids: [0]}
    limits: {max_contexts: 1, pasid_quota: 1}
)");
    auto denied = refusal(request({"vdpa0"}, "guest-1"));
    EXPECT_EQ(denied.error, Error::PolicyDenied);
    EXPECT_NE(denied.message.find("rule 'no-vdpa-for-guests'"), std::string::npos);
    auto unmatched = refusal(request({"vdpa0"}, "web-1"));
    EXPECT_NE(unmatched.message.find("default_policy is deny"), std::string::npos);

    core::Context* ctx = allocated(request({"wq0.0"}, "web-1"));
    ASSERT_NE(ctx, nullptr);
    auto second = refusal(request({"wq0.1"}, "web-1"));
    EXPECT_EQ(second.error, Error::QuotaExceeded);
    EXPECT_NE(second.message.find("max_contexts 1"), std::string::npos);
    // pasid_quota 1 on the rule's devices.
    auto caller = request({}).caller;
    ASSERT_TRUE(engine_->allocatePasid(ctx->id, "wq0.0", caller).ok());
    auto p2 = engine_->allocatePasid(ctx->id, "wq0.0", caller);
    ASSERT_FALSE(p2.ok());
    EXPECT_EQ(p2.failure().error, Error::QuotaExceeded);
    EXPECT_NE(p2.failure().message.find("pasid_quota 1"), std::string::npos);
}

TEST_F(OwnPlugins, AFailedPrepareLeavesNothingBehind) {
    // Only the tester: it prepares vdpa0 and wq0.0, then fails on wq0.1.
    auto cfg = core::parseConfig(
        "default_policy: allow\nplugins:\n  tester:\n    fail_prepare: wq0.1\n", "t.yaml", "/");
    ASSERT_TRUE(cfg.errors.empty());
    plugin_host::PluginHost testerOnly(*sim_, *binder_);
    ASSERT_EQ(testerOnly.loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so"), std::nullopt);
    ASSERT_TRUE(testerOnly.configure(*cfg.config).empty());
    // (A loaded plugin keeps the fd it was loaded through.)
    const size_t fds = openFds();
    core::Engine engine(*sim_, pasids_, testerOnly);
    engine.setHost(host_);
    engine.setConfig(cfg.config);
    auto out = engine.allocate(request({"vdpa0", "wq0.0", "wq0.1"}), 1);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.failure().message.find("tester fails to prepare wq0.1"), std::string::npos);
    EXPECT_TRUE(engine.contexts().empty());
    EXPECT_EQ(openFds(), fds);
    sim_->collect();
    EXPECT_EQ(sim_->stats().files, 0U);
    EXPECT_EQ(sim_->stats().contexts, 0U);
}

} // namespace
} // namespace svad::test
