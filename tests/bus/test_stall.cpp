// Nothing blocks svad's loop: while a plugin's release is stuck giving a
// function back to its driver (the sim's binder told to block in restore, as a
// real restore blocks until the VMM closes its fds), svad still answers every
// other caller promptly and its watchdog pings keep coming. The latencies are
// printed ("[ measured ]") and recorded as test properties.
#include "fixture.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace svad::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kBlockMs = 5000;
constexpr double kPromptMs = 100;

double msSince(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string driverOf(const SvadFixture& f, const std::string& address) {
    std::error_code ec;
    auto target =
        std::filesystem::read_symlink(f.sysfs() + "/bus/pci/devices/" + address + "/driver", ec);
    return ec ? std::string() : target.filename().string();
}

// How long one call took, printed and recorded under `name`.
double report(const std::string& name, double ms) {
    char text[32];
    (void)std::snprintf(text, sizeof text, "%.2f", ms);
    std::cout << "[ measured ] " << name << ": " << text << " ms" << std::endl;
    ::testing::Test::RecordProperty(name + "_ms", text);
    return ms;
}

// Counts svad's watchdog pings for 1.5 s on a thread of its own.
std::thread countPings(NotifySocket& sock, int& pings) {
    return std::thread([&sock, &pings] {
        const auto until = Clock::now() + std::chrono::milliseconds(1500);
        while (Clock::now() < until) {
            pings += sock.next(20).find("WATCHDOG=1") != std::string::npos ? 1 : 0;
        }
    });
}

// A configuration that lets auto_bind take 0000:5e:00.0 from its driver.
std::string autoBindConfig(const TempDir& dir) {
    const std::string config = dir.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                          << R"(default_policy: allow
rules:
  - name: nvme-to-vm
    match: {device: "0000:5e:00.0"}
    limits: {auto_bind: true}
)";
    return config;
}

TEST(NoStall, ABlockedReleaseStallsNoOtherCaller) {
    TempDir dir;
    NotifySocket sock(dir.path() + "/notify");
    auto f = underWatchdog(sock, {"--config", autoBindConfig(dir)});
    ASSERT_FALSE(sock.waitFor("READY=1\nSTATUS=", 5000).empty());

    // A context whose function auto_bind took from its driver: its release gives it back.
    const sdbus::ObjectPath nvme = f->allocate("vm-1", {"0000:5e:00.0"});
    ASSERT_EQ(driverOf(*f, "0000:5e:00.0"), "vfio-pci");
    std::filesystem::create_directories(f->sysfs() + "/.sim");
    std::ofstream(f->sysfs() + "/.sim/restore_delay_ms") << kBlockMs << "\n";

    const auto released = Clock::now();
    f->proxy("/org/svad/Svad1")
        ->callMethod("ReleaseContext")
        .onInterface("org.svad.Svad1.Manager")
        .withArguments(nvme);
    report("release_context", msSince(released));
    // The release thread is now inside the blocked restore.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));

    // Watchdog pings are counted on a thread of their own while the calls go on.
    int pings = 0;
    std::thread watchdog = countPings(sock, pings);

    auto t = Clock::now();
    f->proxy("/org/svad/Svad1")->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
    const double ping = report("peer_ping_during_blocked_restore", msSince(t));

    t = Clock::now();
    const auto version =
        f->property("/org/svad/Svad1", "org.svad.Svad1.Manager", "Version").get<std::string>();
    const double get = report("property_get_during_blocked_restore", msSince(t));
    EXPECT_FALSE(version.empty());

    const std::string queue = "wq0.0";
    t = Clock::now();
    sdbus::ObjectPath other;
    std::string error;
    try {
        other = f->allocate("vm-2", {queue});
    } catch (const sdbus::Error& e) {
        error = e.getName() + ": " + e.getMessage();
    }
    const double alloc = report("allocate_other_device_during_blocked_restore", msSince(t));
    EXPECT_TRUE(error.empty()) << error;

    t = Clock::now();
    f->proxy("/org/svad/Svad1")->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
    const double pingAfter = report("peer_ping_after_allocation", msSince(t));
    watchdog.join();
    std::cout << "[ measured ] watchdog pings in 1.5 s (WATCHDOG_USEC=200000): " << pings
              << std::endl;
    ::testing::Test::RecordProperty("watchdog_pings_in_1500ms", std::to_string(pings));

    // Everything above happened while the restore was still blocked.
    const bool stillBlocked = driverOf(*f, "0000:5e:00.0") == "vfio-pci";
    const double blockedFor = msSince(released);
    EXPECT_TRUE(stillBlocked) << "the restore ended before the measurements did";
    EXPECT_LT(blockedFor, kBlockMs);

    EXPECT_LT(ping, kPromptMs);
    EXPECT_LT(get, kPromptMs);
    EXPECT_LT(alloc, kPromptMs);
    EXPECT_LT(pingAfter, kPromptMs);
    // Pings at half of WATCHDOG_USEC: about 15 in 1.5 s; a stalled loop sends none.
    EXPECT_GE(pings, 8);

    // The release still runs to its end and gives the function back to its driver.
    EXPECT_TRUE(waitUntil([&f] { return driverOf(*f, "0000:5e:00.0") == "nvme"; }, 10000));
    report("restore_finished_after", msSince(released));
    EXPECT_GE(msSince(released), kBlockMs);
}

// An allocation's slow parts run off the loop: while its plugin's driver
// rebind is stuck for 5 s (the sim's binder told to block in bind, as a real
// unbind can wait on a driver), svad answers every other caller promptly,
// allocates another device, and its watchdog pings keep coming. The stuck
// allocation's devices stay reserved: asking for one of them again is Busy
// at once, not a second rebind.
TEST(NoStall, ABlockedRebindStallsNoOtherCaller) {
    TempDir dir;
    NotifySocket sock(dir.path() + "/notify");
    auto f = underWatchdog(sock, {"--config", autoBindConfig(dir)});
    ASSERT_FALSE(sock.waitFor("READY=1\nSTATUS=", 5000).empty());
    ASSERT_EQ(driverOf(*f, "0000:5e:00.0"), "nvme");
    std::filesystem::create_directories(f->sysfs() + "/.sim");
    std::ofstream(f->sysfs() + "/.sim/bind_delay_ms") << kBlockMs << "\n";

    // The allocation that rebinds, on a connection of its own.
    auto connection = sdbus::createSessionBusConnectionWithAddress(f->bus());
    auto proxy = svad::dbus::compat::makeProxy(*connection, "org.svad.Svad1", "/org/svad/Svad1");
    std::atomic<bool> answered{false};
    std::string firstError;
    const auto started = Clock::now();
    proxy->callMethodAsync("AllocateContext")
        .onInterface("org.svad.Svad1.Manager")
        .withArguments(std::string("vm-1"), std::vector<std::string>{"0000:5e:00.0"},
                       std::map<std::string, sdbus::Variant>{})
        .uponReplyInvoke([&answered, &firstError](svad::dbus::compat::AsyncError e,
                                                  const sdbus::ObjectPath& /*path*/,
                                                  const sdbus::UnixFd& /*iommufd*/,
                                                  const std::map<std::string, sdbus::UnixFd>&,
                                                  const std::map<std::string, sdbus::Variant>&) {
            firstError = !e ? std::string() : std::string(e->getName());
            answered = true;
        });
    connection->enterEventLoopAsync();
    // Under way once the sim's binder is blocked in the bind.
    ASSERT_TRUE(waitUntil(
        [&f] { return std::filesystem::exists(f->sysfs() + "/.sim/bind_delay_ms.active"); }, 3000))
        << "the rebind never started";
    // Only this first bind blocks (the plugin binds the group's other members after it).
    std::filesystem::remove(f->sysfs() + "/.sim/bind_delay_ms");

    // Watchdog pings are counted on a thread of their own while the calls go on.
    int pings = 0;
    std::thread watchdog = countPings(sock, pings);

    auto t = Clock::now();
    f->proxy("/org/svad/Svad1")->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
    const double ping = report("peer_ping_during_blocked_rebind", msSince(t));

    t = Clock::now();
    const auto count =
        f->property("/org/svad/Svad1", "org.svad.Svad1.Manager", "ContextCount").get<uint32_t>();
    const double get = report("property_get_during_blocked_rebind", msSince(t));
    EXPECT_EQ(count, 0U) << "the blocked allocation was stored before its rebind ended";

    t = Clock::now();
    std::string error;
    try {
        (void)f->allocate("vm-2", {"wq0.0"});
    } catch (const sdbus::Error& e) {
        error = e.getName() + ": " + e.getMessage();
    }
    const double alloc = report("allocate_other_device_during_blocked_rebind", msSince(t));
    EXPECT_TRUE(error.empty()) << error;

    // The same device again: refused at once, while the first one still holds it.
    t = Clock::now();
    std::string busy;
    try {
        (void)f->allocate("vm-3", {"0000:5e:00.0"});
    } catch (const sdbus::Error& e) {
        busy = e.getName() + ": " + e.getMessage();
    }
    const double again = report("allocate_same_device_during_blocked_rebind", msSince(t));
    EXPECT_NE(busy.find("org.svad.Svad1.Error.Busy"), std::string::npos) << busy;
    EXPECT_NE(busy.find("being handed to vm vm-1"), std::string::npos) << busy;
    watchdog.join();
    // svad's notifications go on: keep reading them (a full socket would block its sends).
    std::atomic<bool> draining{true};
    std::thread drain([&sock, &draining] {
        while (draining) {
            (void)sock.next(20);
        }
    });
    std::cout << "[ measured ] watchdog pings in 1.5 s during the rebind: " << pings << std::endl;
    ::testing::Test::RecordProperty("watchdog_pings_during_rebind_in_1500ms",
                                    std::to_string(pings));

    EXPECT_FALSE(answered.load()) << "the allocation did not wait for its rebind";
    EXPECT_LT(msSince(started), kBlockMs) << "the measurements outlasted the block";
    EXPECT_LT(ping, kPromptMs);
    EXPECT_LT(get, kPromptMs);
    EXPECT_LT(alloc, kPromptMs);
    EXPECT_LT(again, kPromptMs);
    EXPECT_GE(pings, 8);

    // The blocked allocation still completes, with its device on vfio-pci.
    const bool completed = waitUntil([&answered] { return answered.load(); }, 15000);
    EXPECT_TRUE(completed) << f->svad().log();
    if (completed) {
        report("blocked_allocation_answered_after", msSince(started));
        EXPECT_EQ(firstError, "") << f->svad().log();
        EXPECT_GE(msSince(started), kBlockMs);
        EXPECT_EQ(driverOf(*f, "0000:5e:00.0"), "vfio-pci");
        EXPECT_EQ(f->property("/org/svad/Svad1", "org.svad.Svad1.Manager", "ContextCount")
                      .get<uint32_t>(),
                  2U);
    }
    connection->leaveEventLoop();
    draining = false;
    drain.join();
}

// Reading and checking a configuration runs off the loop: while a reload's
// plugin takes 3 s to take its settings, svad answers everyone else at once,
// and the reload itself answers when it is done, with the new file in force.
TEST(NoStall, ASlowReloadStallsNoOtherCaller) {
    TempDir dir;
    const std::string plugins = dir.path() + "/plugins";
    std::filesystem::create_directories(plugins);
    std::filesystem::copy_file(std::string(SVAD_TEST_PLUGIN_DIR) + "/tester.so",
                               plugins + "/tester.so");
    const std::string config = dir.path() + "/svad.yaml";
    auto write = [&](const std::string& policy) {
        std::ofstream(config) << "plugin_dir: " << plugins << "\n"
                              << "default_policy: " << policy << "\n"
                              << "plugins:\n  tester: {configure_delay_ms: 3000}\n";
    };
    write("allow");
    SvadFixture f(testHost(), {"--config", config});
    write("deny");

    auto connection = sdbus::createSessionBusConnectionWithAddress(f.bus());
    auto proxy = svad::dbus::compat::makeProxy(*connection, "org.svad.Svad1", "/org/svad/Svad1");
    std::atomic<bool> answered{false};
    std::string error;
    const auto start = Clock::now();
    proxy->callMethodAsync("Reload")
        .onInterface("org.svad.Svad1.Manager")
        .uponReplyInvoke([&answered, &error](svad::dbus::compat::AsyncError e) {
            error = !e ? std::string() : std::string(e->getName());
            answered = true;
        });
    connection->enterEventLoopAsync();
    // The reload is under way (its request went out first on this connection).
    auto t = Clock::now();
    proxy->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
    EXPECT_LT(report("ping_during_reload", msSince(t)), kPromptMs);
    t = Clock::now();
    EXPECT_EQ(
        f.property("/org/svad/Svad1", "org.svad.Svad1.Manager", "DefaultPolicy").get<std::string>(),
        "allow");
    EXPECT_LT(report("get_during_reload", msSince(t)), kPromptMs);
    EXPECT_FALSE(answered.load()) << "the reload did not wait for its plugin";

    ASSERT_TRUE(waitUntil([&answered] { return answered.load(); }, 10000));
    report("reload", msSince(start));
    EXPECT_GE(msSince(start), 2900);
    EXPECT_EQ(error, "");
    EXPECT_EQ(
        f.property("/org/svad/Svad1", "org.svad.Svad1.Manager", "DefaultPolicy").get<std::string>(),
        "deny");
    connection->leaveEventLoop();
}

} // namespace
} // namespace svad::test
