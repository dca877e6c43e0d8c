// The plugin host: loading (order, ABI compatibility, refusals that do no
// harm) and the decision rule (every plugin asked, first DENY wins, nobody
// allowing is a deny).
#include "plugin_fixture.h"

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <link.h>
#include <sys/stat.h>

namespace svad::test {
namespace {

namespace fs = std::filesystem;
using names::Error;

std::vector<std::string> loadedNames(const plugin_host::PluginHost& h) {
    std::vector<std::string> out;
    for (const auto& p : h.plugins()) {
        out.push_back(p.name);
    }
    return out;
}

std::string refusalOf(const plugin_host::PluginHost& h, const std::string& file) {
    for (const auto& r : h.refusals()) {
        if (fs::path(r.path).filename() == file) {
            return r.reason;
        }
    }
    return "(not refused)";
}

TEST_F(PluginPath, OwnPluginsLoadInTheOrderOfTheirFileNames) {
    loadOwnPlugins();
    EXPECT_EQ(loadedNames(*plugins_), (std::vector<std::string>{"idxd", "vdpa", "vfio"}));
    EXPECT_TRUE(plugins_->refusals().empty());
    for (const auto& p : plugins_->plugins()) {
        EXPECT_EQ(p.abi, 4U) << p.name;
        EXPECT_EQ(p.version, "1.0") << p.name;
        EXPECT_EQ(p.kinds.size(), 1U) << p.name;
    }
}

// A plugin is loaded through the fd its checks ran on, never again by name:
// the dynamic linker knows each of svad's plugins as /proc/self/fd/N.
TEST_F(PluginPath, PluginsAreLoadedThroughTheFdTheyWereCheckedOn) {
    loadOwnPlugins();
    ASSERT_EQ(plugins_->plugins().size(), 3U);
    std::vector<std::string> names;
    (void)::dl_iterate_phdr(
        [](struct dl_phdr_info* info, size_t, void* data) {
            static_cast<std::vector<std::string>*>(data)->emplace_back(
                info->dlpi_name != nullptr ? info->dlpi_name : "");
            return 0;
        },
        &names);
    size_t viaFd = 0;
    for (const auto& n : names) {
        viaFd += n.rfind("/proc/self/fd/", 0) == 0 ? 1 : 0;
        EXPECT_EQ(n.find(SVAD_PLUGIN_BUILD_DIR), std::string::npos) << "loaded by name: " << n;
    }
    EXPECT_GE(viaFd, 3U) << ::testing::PrintToString(names);
}

TEST_F(PluginPath, APluginBuiltAgainstTheOldestHeaderStillLoadsAndWorks) {
    ASSERT_EQ(plugins_->loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/legacy.so"), std::nullopt);
    auto list = plugins_->plugins();
    ASSERT_EQ(list.size(), 1U);
    EXPECT_EQ(list[0].name, "legacy");
    EXPECT_EQ(list[0].abi, 1U);
    EXPECT_EQ(list[0].version, ""); // ABI 1 had no version field
    // An ABI 1 plugin has no configure: settings for it are an error, none are fine.
    auto withSettings = core::parseConfig("plugins:\n  legacy:\n    x: 1\n", "t.yaml", "/");
    ASSERT_TRUE(withSettings.errors.empty());
    EXPECT_EQ(plugins_->configure(*withSettings.config).size(), 1U);
    configure("default_policy: allow\n");

    // Its prepare (which would open the queue) is not called since ABI 4: the
    // queue comes without an fd, its node granted to the owner.
    auto ctx = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_TRUE(ctx.ok()) << ctx.failure().message;
    EXPECT_EQ(ctx.value()->devices.at(0).plugin, "legacy");
    EXPECT_FALSE(ctx.value()->devices.at(0).fd.valid());
    EXPECT_EQ(ctx.value()->devices.at(0).node, dev() + "/dsa/wq0.0");
    EXPECT_EQ(sim_->grants().count(dev() + "/dsa/wq0.0"), 1U);
}

TEST_F(PluginPath, APluginBuiltAgainstTheAbi2HeaderStillLoadsAndWorks) {
    ASSERT_EQ(plugins_->loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/legacy2.so"), std::nullopt);
    auto list = plugins_->plugins();
    ASSERT_EQ(list.size(), 1U);
    EXPECT_EQ(list[0].name, "legacy2");
    EXPECT_EQ(list[0].abi, 2U);
    EXPECT_EQ(list[0].version, "2.0");
    configure("default_policy: allow\n");

    // A VF of the NIC: on vfio-pci with its cdev, alone in its group (legacy2
    // denies a device whose group members it is not shown).
    const std::string vf = pci("0000:3b:00.0")->virtfns.at(0);
    auto ctx = engine_->allocate(request({vf}), 1);
    ASSERT_TRUE(ctx.ok()) << ctx.failure().message;
    EXPECT_EQ(ctx.value()->devices.at(0).plugin, "legacy2");
    EXPECT_NE(fdLink(ctx.value()->devices.at(0).fd.get()).find("svad-sim:vfio:vfio"),
              std::string::npos);
}

TEST_F(PluginPath, BadPluginsAreRefusedWithTheirReasonAndTheRestLoad) {
    const std::string dir = dir_.path() + "/plugins";
    fs::create_directory(dir);
    ::chmod(dir.c_str(), 0755);
    auto put = [&dir](const std::string& from, const std::string& as, mode_t mode) {
        fs::copy_file(from, dir + "/" + as);
        ::chmod((dir + "/" + as).c_str(), mode);
    };
    const std::string own = SVAD_PLUGIN_BUILD_DIR;
    const std::string test = SVAD_TEST_PLUGIN_DIR;
    put(own + "/vdpa.so", "vdpa.so", 0755);
    put(test + "/future_abi.so", "future_abi.so", 0755);
    put(test + "/no_entry.so", "no_entry.so", 0755);
    put(test + "/no_decide.so", "no_decide.so", 0755);
    put(test + "/init_fails.so", "init_fails.so", 0755);
    put(test + "/tiny_struct.so", "tiny_struct.so", 0755);
    put(own + "/idxd.so", "world_writable.so", 0757);
    put(own + "/idxd.so", "group_writable.so", 0775);
    put(own + "/vfio.so", "vfio.so", 0755);
    fs::create_symlink(own + "/idxd.so", dir + "/symlink.so");
    std::ofstream(dir + "/garbage.so") << "not an ELF file";
    ::chmod((dir + "/garbage.so").c_str(), 0644);
    std::ofstream(dir + "/README") << "not a plugin: ignored";
    bool root = ::geteuid() == 0;
    if (root) {
        put(own + "/idxd.so", "not_roots.so", 0755);
        ASSERT_EQ(::chown((dir + "/not_roots.so").c_str(), 65534, 65534), 0);
    }

    plugins_->loadDirectory(dir);
    EXPECT_EQ(loadedNames(*plugins_), (std::vector<std::string>{"vdpa", "vfio"}));
    EXPECT_NE(refusalOf(*plugins_, "future_abi.so").find("speaks plugin ABI 99"),
              std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "no_entry.so").find("does not export svad_plugin_init"),
              std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "no_decide.so").find("leaves out decide"), std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "init_fails.so").find("svad_plugin_init failed"),
              std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "tiny_struct.so").find("8 bytes"), std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "world_writable.so").find("writable by others"),
              std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "group_writable.so").find("writable by its group"),
              std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "symlink.so").find("symbolic link"), std::string::npos);
    EXPECT_NE(refusalOf(*plugins_, "garbage.so").find("cannot be loaded"), std::string::npos);
    if (root) {
        EXPECT_NE(refusalOf(*plugins_, "not_roots.so").find("owned by uid 65534"),
                  std::string::npos);
    }
    EXPECT_EQ(refusalOf(*plugins_, "README"), "(not refused)");

    // What loaded works: vdpa0 through the vdpa plugin.
    configure("default_policy: allow\n");
    auto ctx = engine_->allocate(request({"vdpa0"}), 1);
    ASSERT_TRUE(ctx.ok()) << ctx.failure().message;
    EXPECT_EQ(ctx.value()->devices.at(0).plugin, "vdpa");
    // Nobody loaded handles queues now.
    auto q = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.failure().error, Error::PolicyDenied);
    EXPECT_NE(q.failure().message.find("no loaded plugin handles queue devices"),
              std::string::npos);
}

TEST_F(PluginPath, AnUnsafePluginDirectoryLoadsNothing) {
    const std::string dir = dir_.path() + "/open";
    fs::create_directory(dir);
    fs::copy_file(std::string(SVAD_PLUGIN_BUILD_DIR) + "/idxd.so", dir + "/idxd.so");
    ::chmod(dir.c_str(), 0777);
    plugins_->loadDirectory(dir);
    EXPECT_TRUE(plugins_->plugins().empty());
    ASSERT_EQ(plugins_->refusals().size(), 1U);
    EXPECT_NE(plugins_->refusals()[0].reason.find("writable by others"), std::string::npos);

    plugin_host::PluginHost other(*sim_, *binder_);
    other.loadDirectory(dir_.path() + "/missing");
    ASSERT_EQ(other.refusals().size(), 1U);
    EXPECT_NE(other.refusals()[0].reason.find("every request is denied"), std::string::npos);
}

TEST_F(PluginPath, TheFirstDenyWinsAndEveryPluginIsAsked) {
    loadOwnPlugins();
    ASSERT_EQ(plugins_->loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so"), std::nullopt);
    configure("default_policy: allow\nplugins:\n  tester:\n    deny: wq0.0\n");

    // idxd (loaded first) allows wq0.0, tester denies it: denied, and both were asked.
    core::PolicyQuery q;
    q.vm = "vm-1";
    q.deviceId = "wq0.0";
    q.kind = core::DeviceKind::Queue;
    for (const auto& x : host_.queues) {
        if (x.name == "wq0.0") {
            q.queue = &x;
        }
    }
    auto d = plugins_->decide(q);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.plugin, "tester");
    ASSERT_EQ(d.verdicts.size(), 2U);
    EXPECT_EQ(d.verdicts[0].plugin, "idxd");
    EXPECT_EQ(d.verdicts[0].verdict, core::Verdict::Allow);
    EXPECT_EQ(d.verdicts[1].verdict, core::Verdict::Deny);
    auto refused = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.failure().error, Error::PolicyDenied);
    EXPECT_NE(refused.failure().message.find("tester denies wq0.0"), std::string::npos);

    // IGNORE from the tester: idxd's ALLOW decides, and idxd prepares.
    configure("default_policy: allow\nplugins:\n  tester:\n    others: ignore\n");
    auto ok = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_TRUE(ok.ok()) << ok.failure().message;
    EXPECT_EQ(ok.value()->devices.at(0).plugin, "idxd");

    // Everyone IGNOREs a kernel queue? idxd denies it; a device only IGNOREd is denied.
    engine_->releaseUnchecked(ok.value()->id);
    plugin_host::PluginHost onlyTester(*sim_, *binder_);
    ASSERT_EQ(onlyTester.loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so"), std::nullopt);
    auto cfg = core::parseConfig("plugins:\n  tester:\n    others: ignore\n", "t.yaml", "/");
    ASSERT_TRUE(onlyTester.configure(*cfg.config).empty());
    auto none = onlyTester.decide(q);
    EXPECT_FALSE(none.allowed);
    EXPECT_NE(none.reason.find("no plugin allows it (asked: tester)"), std::string::npos);
}

TEST_F(PluginPath, APluginRefusingItsSettingsKeepsThePreviousOnes) {
    ASSERT_EQ(plugins_->loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so"), std::nullopt);
    auto good = core::parseConfig("plugins:\n  tester:\n    deny: wq0.1\n", "a.yaml", "/");
    auto bad = core::parseConfig("plugins:\n  tester:\n    others: perhaps\n", "b.yaml", "/");
    ASSERT_TRUE(plugins_->configure(*good.config).empty());
    auto errors = plugins_->configure(*bad.config, good.config.get());
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_EQ(errors[0], "plugins.tester: others: expected allow or ignore");
    core::PolicyQuery q;
    q.deviceId = "wq0.1";
    q.kind = core::DeviceKind::Queue;
    EXPECT_FALSE(plugins_->decide(q).allowed); // still denies wq0.1: the good settings stand
}

TEST_F(PluginPath, APluginsStrayFdsAndExceptionsDoNoHarm) {
    ASSERT_EQ(plugins_->loadFile(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so"), std::nullopt);
    configure("default_policy: allow\nplugins:\n  tester:\n    stray_fd: vdpa0\n");
    const size_t fds = openFds();
    auto stray = engine_->allocate(request({"vdpa0"}), 1);
    ASSERT_FALSE(stray.ok());
    EXPECT_EQ(stray.failure().error, Error::KernelError);
    EXPECT_NE(stray.failure().message.find("handed back fd 0, which the host did not open"),
              std::string::npos)
        << stray.failure().message;
    EXPECT_NE(::fcntl(0, F_GETFD), -1); // svad's fd 0 was not taken (nor closed)
    EXPECT_EQ(openFds(), fds);          // the vhost fd it opened and dropped was closed
    sim_->collect();
    EXPECT_EQ(sim_->stats().files, 0U);
    // Any fd for a queue is refused since ABI 4: a queue's prepare opens nothing.
    configure("default_policy: allow\nplugins:\n  tester:\n    stray_fd: wq0.0\n");
    auto strayQueue = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_FALSE(strayQueue.ok());
    EXPECT_EQ(strayQueue.failure().error, Error::KernelError);
    EXPECT_NE(
        strayQueue.failure().message.find("since plugin ABI 4 a queue's prepare opens nothing"),
        std::string::npos)
        << strayQueue.failure().message;
    EXPECT_NE(::fcntl(0, F_GETFD), -1);
    EXPECT_TRUE(sim_->grants().empty()); // nothing granted for a context that never was

    configure("default_policy: allow\nplugins:\n  tester:\n    throw_in: decide\n");
    auto threw = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_FALSE(threw.ok());
    EXPECT_NE(threw.failure().message.find("plugin tester denies: threw an exception"),
              std::string::npos)
        << threw.failure().message;
    configure("default_policy: allow\nplugins:\n  tester:\n    throw_in: prepare\n");
    auto threwPrepare = engine_->allocate(request({"wq0.0"}), 1);
    ASSERT_FALSE(threwPrepare.ok());
    EXPECT_NE(threwPrepare.failure().message.find("could not prepare wq0.0: threw an exception"),
              std::string::npos)
        << threwPrepare.failure().message;
    EXPECT_EQ(openFds(), fds);
}

TEST_F(PluginPath, AFunctionIsNotHandedOutWhileItsQueuesOrVdpaDevicesAreHeld) {
    loadOwnPlugins();
    configure("default_policy: allow\nrules:\n  - name: nic\n    match: {kind: pci}\n"
              "    limits: {auto_bind: true}\n");
    auto vdpa = engine_->allocate(request({"vdpa0"}), 1);
    ASSERT_TRUE(vdpa.ok()) << vdpa.failure().message;
    auto nic = engine_->allocate(request({"0000:3b:00.0"}, "vm-2"), 1);
    ASSERT_FALSE(nic.ok());
    EXPECT_EQ(nic.failure().error, Error::Busy);
    EXPECT_NE(nic.failure().message.find("has a vDPA device vdpa0, held by context"),
              std::string::npos)
        << nic.failure().message;
}

} // namespace
} // namespace svad::test
