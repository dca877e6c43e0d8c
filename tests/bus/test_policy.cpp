// Policy on the bus, with the real svad and its own plugins: who may allocate
// (svad's own check and the shipped system-bus policy, tried from a second
// uid), reloading the configuration (a bad file changes nothing), the audit
// records, the plugin list and --check-config.
#include "fixture.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr uid_t kNobody = 65534;

std::string errorOf(const std::function<void()>& f) {
    try {
        f();
    } catch (const sdbus::Error& e) {
        return e.getName() + ": " + e.getMessage();
    }
    return "(no error)";
}

void reload(SvadFixture& f) {
    f.proxy(kRoot)->callMethod("Reload").onInterface(kManager);
}

std::string writeConfig(const std::string& path, const std::string& body) {
    std::ofstream(path) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n" << body;
    return path;
}

size_t countIn(const std::string& log, const std::string& text) {
    size_t n = 0;
    for (auto pos = log.find(text); pos != std::string::npos; pos = log.find(text, pos + 1)) {
        ++n;
    }
    return n;
}

// Waits until the log holds more than `already` lines with `text`.
bool waitForLog(Process& p, const std::string& text, size_t already = 0, int ms = 5000) {
    for (int i = 0; i < ms / 20; ++i) {
        if (countIn(p.log(), text) > already) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

// svactl run as another uid (nobody, with its groups from the user database),
// from a copy other users can execute, on a bus socket they can reach.
class OtherUid {
public:
    explicit OtherUid(SvadFixture& f) : f_(f) {
        ::chmod(f.root().c_str(), 0755);
        ::chmod(dir_.path().c_str(), 0755);
        svactl_ = dir_.path() + "/svactl";
        std::filesystem::copy_file(SVACTL_BINARY, svactl_);
        ::chmod(svactl_.c_str(), 0755);
    }
    RunResult svactl(std::vector<std::string> args) const {
        std::vector<std::string> argv = {"setpriv",
                                         "--reuid=" + std::to_string(kNobody),
                                         "--regid=" + std::to_string(kNobody),
                                         "--init-groups",
                                         svactl_,
                                         "--bus",
                                         f_.bus()};
        argv.insert(argv.end(), args.begin(), args.end());
        return runCommand(argv);
    }

private:
    SvadFixture& f_;
    TempDir dir_;
    std::string svactl_;
};

TEST(Policy, ANonAdminUidIsRefusedBySvadItselfAndMayStillRead) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "running a client under a second uid needs root";
    }
    TempDir conf;
    const std::string config =
        writeConfig(conf.path() + "/svad.yaml", "default_policy: allow\nadmin_group: \"4242\"\n");
    SvadFixture f(testHost(), {"--config", config}, {}, systemBusConfig(conf, false));
    OtherUid nobody(f);

    auto list = nobody.svactl({"devices"});
    EXPECT_EQ(list.exitCode, 0) << list.errors;
    EXPECT_NE(list.output.find("0000:6a:01.0"), std::string::npos);

    auto alloc = nobody.svactl({"alloc", "--vm", "vm1", "wq0.0"});
    EXPECT_EQ(alloc.exitCode, 1);
    EXPECT_NE(alloc.errors.find("(PermissionDenied)"), std::string::npos) << alloc.errors;
    EXPECT_NE(alloc.errors.find("uid 65534"), std::string::npos) << alloc.errors;
    EXPECT_NE(alloc.errors.find("group 4242"), std::string::npos) << alloc.errors;
    auto reloadAsNobody = nobody.svactl({"reload"});
    EXPECT_EQ(reloadAsNobody.exitCode, 1);
    EXPECT_NE(reloadAsNobody.errors.find("PermissionDenied"), std::string::npos);
    EXPECT_TRUE(waitForLog(f.svad(), "refused AllocateContext to uid 65534"));

    // Root may; then nobody's own group becomes the admin group, and nobody may too.
    EXPECT_NO_THROW(f.allocate("vm-root", {"wq0.1"}));
    writeConfig(config, "default_policy: allow\nadmin_group: \"65534\"\n");
    reload(f);
    auto allowed = nobody.svactl({"alloc", "--vm", "vm1", "wq0.0"});
    EXPECT_EQ(allowed.exitCode, 0) << allowed.errors;
    EXPECT_NE(allowed.output.find("wq0.0"), std::string::npos) << allowed.output;
    EXPECT_TRUE(waitForLog(f.svad(), "CALLER_UID=65534"));
}

// On a bus that lets anyone call, a stream of refused calls costs a few log
// records, not one each; a later record says how many were held back.
TEST(Policy, RefusalsOfANonAdminAreRateLimitedInTheLog) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "running a client under a second uid needs root";
    }
    TempDir conf;
    const std::string config =
        writeConfig(conf.path() + "/svad.yaml", "default_policy: allow\nadmin_group: \"4242\"\n");
    SvadFixture f(testHost(), {"--config", config}, {}, systemBusConfig(conf, false));
    OtherUid nobody(f); // makes the bus socket reachable for nobody
    constexpr int kCalls = 200;
    const auto start = std::chrono::steady_clock::now();
    auto r = runCommand({"setpriv", "--reuid=65534", "--regid=65534", "--init-groups", "sh", "-c",
                         "i=0; while [ $i -lt " + std::to_string(kCalls) +
                             " ]; do busctl --address=" + f.bus() +
                             " call org.svad.Svad1 /org/svad/Svad1 org.svad.Svad1.Manager Rescan "
                             ">/dev/null 2>&1; i=$((i + 1)); done; echo done"});
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_NE(r.output.find("done"), std::string::npos) << r.errors;
    const std::string line = "refused Rescan to uid 65534";
    ASSERT_TRUE(waitForLog(f.svad(), line));
    // A burst of 10, then one a second.
    const size_t logged = countIn(f.svad().log(), line);
    EXPECT_GE(logged, 10U);
    EXPECT_LE(static_cast<double>(logged), 10 + seconds + 1)
        << kCalls << " calls in " << seconds << " s";
    // A second later the next refusal goes out with the count of those held back.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    auto last = nobody.svactl({"rescan"});
    EXPECT_NE(last.errors.find("PermissionDenied"), std::string::npos) << last.errors;
    ASSERT_TRUE(waitForLog(f.svad(), line, logged));
    EXPECT_NE(f.svad().log().find("SUPPRESSED="), std::string::npos) << f.svad().log();
}

TEST(Policy, TheShippedBusPolicyRefusesNonAdminsBeforeSvadSeesThem) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "running a client under a second uid needs root";
    }
    TempDir conf;
    const std::string config =
        writeConfig(conf.path() + "/svad.yaml", "default_policy: allow\nadmin_group: \"65534\"\n");
    SvadFixture f(testHost(), {"--config", config}, {}, systemBusConfig(conf, true));
    OtherUid nobody(f);

    auto list = nobody.svactl({"devices"});
    EXPECT_EQ(list.exitCode, 0) << list.errors;
    // svad would allow nobody (its admin_group), but the bus policy names group "svad".
    auto alloc = nobody.svactl({"alloc", "--vm", "vm1", "wq0.0"});
    EXPECT_EQ(alloc.exitCode, 1);
    EXPECT_NE(alloc.errors.find("org.freedesktop.DBus.Error.AccessDenied"), std::string::npos)
        << alloc.errors;
    EXPECT_EQ(f.svad().log().find("CALLER_UID=65534"), std::string::npos);
    for (const char* method : {"rescan", "reload"}) {
        auto r = nobody.svactl({method});
        EXPECT_EQ(r.exitCode, 1) << method;
        EXPECT_NE(r.errors.find("AccessDenied"), std::string::npos) << method << r.errors;
    }
    // Root owns the name and may allocate.
    EXPECT_NO_THROW(f.allocate("vm-root", {"wq0.0"}));
}

// On a system-type bus under the shipped policy too, a reply the caller cannot receive
// (no fd passing) takes the context back at once. Whether svad's error answer reaches the
// caller is the bus policy's call; the context and the device are svad's.
TEST(Policy, UnderTheShippedPolicyAnUndeliverableReplyStillTakesTheContextBack) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "the shipped policy lets root or group svad allocate";
    }
    TempDir conf;
    const std::string config = writeConfig(conf.path() + "/svad.yaml", "default_policy: allow\n");
    SvadFixture f(testHost(), {"--config", config}, {}, systemBusConfig(conf, true));
    const std::string error = allocateWithoutFdPassing(f.bus(), "vm1", {"wq0.0"}, 3'000'000ULL);
    EXPECT_TRUE(error == "org.svad.Svad1.Error.NotSupported" ||
                error == "org.freedesktop.DBus.Error.Timeout")
        << error;
    EXPECT_TRUE(waitUntil(
        [&f] { return f.property(kRoot, kManager, "ContextCount").get<uint32_t>() == 0; }));
    EXPECT_TRUE(f.property("/org/svad/Svad1/queue/wq0_2e0", "org.svad.Svad1.Queue", "HeldBy")
                    .get<std::vector<sdbus::ObjectPath>>()
                    .empty());
    EXPECT_NO_THROW(f.allocate("vm2", {"wq0.0"}));
}

TEST(Policy, ReloadValidatesTheWholeFileAndKeepsTheOldOneOnError) {
    TempDir conf;
    const std::string config = writeConfig(conf.path() + "/svad.yaml", R"(default_policy: deny
rules:
  - name: a-only
    match: {kind: queue}
    allow: {vms: [vm-a]}
)");
    SvadFixture f(testHost(), {"--config", config});
    const auto held = f.allocate("vm-a", {"wq0.0"});
    EXPECT_NE(errorOf([&] {
                  f.allocate("vm-b", {"wq0.1"});
              }).find("org.svad.Svad1.Error.PolicyDenied: wq0.1: no rule matches"),
              std::string::npos);

    writeConfig(config, R"(default_policy: deny
rules:
  - name: a-and-b
    match: {kind: queue}
    allow: {vms: [vm-a, vm-b]}
)");
    reload(f);
    const auto b = f.allocate("vm-b", {"wq0.1"});

    // Two errors: both reported, with line and column; nothing changes.
    writeConfig(config, R"(default_policy: deny
rules:
  - name: broken
    match: {kind: queues}
    allow: {vm: [vm-c]}
)");
    std::string err = errorOf([&] { reload(f); });
    EXPECT_NE(err.find("org.svad.Svad1.Error.InvalidArgument"), std::string::npos) << err;
    EXPECT_NE(
        err.find("svad.yaml:5:19: rule 'broken' match.kind: expected one of pci, vdpa, queue"),
        std::string::npos)
        << err;
    EXPECT_NE(err.find("svad.yaml:6:13: unknown key 'vm'"), std::string::npos) << err;
    EXPECT_EQ(f.property(kRoot, kManager, "ConfigFile").get<std::string>(), config);
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(b);
    EXPECT_NO_THROW(f.allocate("vm-b", {"wq0.1"})); // a-and-b still in force
    // The context made before any reload is untouched.
    EXPECT_EQ(f.property(held, "org.svad.Svad1.Context", "Vm").get<std::string>(), "vm-a");

    // SIGHUP: a bad file is logged and changes nothing; a good one takes over.
    f.svad().signal(SIGHUP);
    ASSERT_TRUE(waitForLog(f.svad(), "configuration not reloaded"));
    EXPECT_TRUE(f.svad().running());
    writeConfig(config, "default_policy: deny\n");
    const size_t reloads = countIn(f.svad().log(), "configuration reloaded");
    f.svad().signal(SIGHUP);
    ASSERT_TRUE(waitForLog(f.svad(), "configuration reloaded", reloads));
    EXPECT_NE(errorOf([&] { f.allocate("vm-a", {"wq0.2"}); }).find("default_policy is deny"),
              std::string::npos);
}

TEST(Policy, EveryVerdictIsAnAuditRecordWithThePluginsName) {
    TempDir conf;
    const std::string config = writeConfig(conf.path() + "/svad.yaml", R"(default_policy: deny
rules:
  - name: dsa
    match: {device: "wq0.*"}
)");
    SvadFixture f(testHost(), {"--config", config});
    auto ctx = f.allocate("vm-audit", {"wq0.0"});
    (void)errorOf([&] { f.allocate("vm-audit", {"vdpa0"}); });
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(ctx);
    ASSERT_TRUE(waitForLog(f.svad(), "context released"));
    const std::string log = f.svad().log();
    EXPECT_NE(log.find("VM=vm-audit DEVICE=wq0.0 PLUGIN=idxd VERDICT=ALLOW REASON=dedicated queue "
                       "wq0.0 CALLER_UID="),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("DEVICE=vdpa0 PLUGIN=config VERDICT=DENY REASON=no rule matches vdpa0"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("context allocated [VM=vm-audit"), std::string::npos);
    EXPECT_NE(log.find("PLUGIN=idxd MODE=handoff VERDICT=ALLOW"), std::string::npos) << log;
    EXPECT_NE(log.find("context released: released by the owner"), std::string::npos) << log;
}

TEST(Policy, SvactlListsThePluginsAndTheRefusedFiles) {
    TempDir plugins;
    ::chmod(plugins.path().c_str(), 0755);
    for (const char* p : {"idxd.so", "vfio.so"}) {
        std::filesystem::copy_file(std::string(SVAD_PLUGIN_BUILD_DIR) + "/" + p,
                                   plugins.path() + "/" + p);
    }
    ::chmod((plugins.path() + "/vfio.so").c_str(), 0666);
    TempDir conf;
    const std::string config = conf.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << plugins.path() << "\n";
    SvadFixture f(testHost(), {"--config", config});
    auto r = f.svactl({"plugins"});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("idxd  1.0      4    queue"), std::string::npos) << r.output;
    EXPECT_NE(
        r.output.find("refused: " + plugins.path() + "/vfio.so: is writable by others (mode 0666)"),
        std::string::npos)
        << r.output;
    auto json = f.svactl({"--json", "plugins"});
    EXPECT_NE(json.output.find("{\"plugins\":[{\"name\":\"idxd\",\"version\":\"1.0\""),
              std::string::npos)
        << json.output;
    EXPECT_NE(json.output.find("\"abi\":4,\"kinds\":[\"queue\"]"), std::string::npos);
    // No vfio plugin: PCI devices are refused by nobody allowing them.
    std::ofstream(config) << "plugin_dir: " << plugins.path() << "\ndefault_policy: allow\n";
    reload(f);
    EXPECT_NE(errorOf([&] {
                  f.allocate("vm1", {"0000:3b:10.0"});
              }).find("no loaded plugin handles pci devices"),
              std::string::npos);
}

TEST(Policy, CheckConfigValidatesAndExits) {
    TempDir conf;
    const std::string good = writeConfig(conf.path() + "/good.yaml", "default_policy: deny\n");
    auto r = runCommand({SVAD_BINARY, "--check-config", good});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("valid (0 rules, default policy deny, 3 plugins from"),
              std::string::npos)
        << r.output;
    const std::string bad = conf.path() + "/bad.yaml";
    std::ofstream(bad) << "default_policy: deny\nrules:\n  - name: x\n    match: {class: 0xZZ}\n";
    r = runCommand({SVAD_BINARY, "--check-config", bad});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find(bad + ":4:20: rule 'x' match.class: expected a class in hex"),
              std::string::npos)
        << r.errors;
    r = runCommand({SVAD_BINARY, "--check-config", SVAD_SOURCE_DIR "/config/svad.yaml"});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    // A plugin refusing its settings fails the check too.
    const std::string settings =
        writeConfig(conf.path() + "/settings.yaml", "plugins:\n  idxd: {shared_limit: none}\n");
    r = runCommand({SVAD_BINARY, "--check-config", settings});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find("plugins.idxd: shared_limit: expected a whole number from 1, not "
                            "'none'"),
              std::string::npos)
        << r.errors;
}

} // namespace
} // namespace svad::test
