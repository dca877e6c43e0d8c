// svactl monitor against the real svad: context and host events as they
// happen, as text and as JSON; and the orderly stop that monitor also sees.
#include "fixture.h"

#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <mutex>
#include <optional>
#include <signal.h>
#include <sys/wait.h>
#include <thread>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

std::unique_ptr<Process> startMonitor(SvadFixture& f, bool json, const std::string& name) {
    std::vector<std::string> argv = {SVACTL_BINARY, "--bus", f.bus(), "monitor"};
    if (json) {
        argv.emplace_back("--json");
    }
    auto p = std::make_unique<Process>(argv, f.root() + "/" + name);
    if (!waitUntil([&p] { return p->log().find("printing the events") != std::string::npos; })) {
        throw std::runtime_error("svactl monitor did not start: " + p->log());
    }
    return p;
}

TEST(Monitor, PrintsContextAndHostEvents) {
    SvadFixture f(testHost());
    auto text = startMonitor(f, false, "text.log");
    auto json = startMonitor(f, true, "json.log");

    sdbus::ObjectPath ctx = f.allocate("vm1", {"wq0.0"});
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(ctx);
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);

    const std::string path = ctx;
    // Each monitor is a process of its own: wait for both to have printed it all.
    ASSERT_TRUE(waitUntil([&] {
        return json->log().find("\"event\":\"change\",\"path\":\"/org/svad/Svad1\"") !=
                   std::string::npos &&
               text->log().find("remove    " + path + " (org.svad.Svad1.Context)") !=
                   std::string::npos;
    })) << json->log()
        << text->log();
    const std::string t = text->log();
    EXPECT_NE(t.find("add       " + path + " (org.svad.Svad1.Context)"), std::string::npos) << t;
    EXPECT_NE(t.find("change    /org/svad/Svad1/queue/wq0_2e0 org.svad.Svad1.Queue HeldBy="),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("released  " + path + " reason=\"released by the owner\""), std::string::npos)
        << t;
    EXPECT_NE(t.find("remove    " + path + " (org.svad.Svad1.Context)"), std::string::npos) << t;
    EXPECT_NE(t.find("SVAD ["), std::string::npos) << t;

    const std::string j = json->log();
    EXPECT_NE(j.find("\"event\":\"add\",\"path\":\"" + path +
                     "\",\"interfaces\":[\"org.svad.Svad1.Context\"]}"),
              std::string::npos)
        << j;
    EXPECT_NE(j.find("\"event\":\"released\",\"path\":\"" + path +
                     "\",\"reason\":\"released by the owner\"}"),
              std::string::npos)
        << j;
    EXPECT_NE(j.find("\"ScanCount\":2"), std::string::npos) << j;

    // svad going away is an event too; monitor keeps listening.
    f.svad().signal(SIGTERM);
    EXPECT_TRUE(waitUntil([&] {
        return json->log().find("\"event\":\"stopped\"") != std::string::npos;
    })) << json->log();
    EXPECT_TRUE(json->running());
    text->signal(SIGINT);
    json->signal(SIGINT);
}

TEST(Monitor, TakesNoArguments) {
    SvadFixture f(testHost());
    auto r = f.svactl({"monitor", "extra"});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_EQ(r.errors, "svactl: unexpected argument 'extra' for monitor\n");
}

// SIGTERM while a caller waits for a rescan: the caller gets an answer that
// says so, and svad exits 0. The host is large enough that its scan takes far
// longer than the signal needs, and a Ping on the same connection, answered
// after svad took the Rescan, makes sure the scan is under way.
TEST(Stop, PendingRescanIsAnswered) {
    SvadFixture f(hostgen::synthesize(1024));
    auto connection = sdbus::createSessionBusConnectionWithAddress(f.bus());
    auto proxy = svad::dbus::compat::makeProxy(*connection, "org.svad.Svad1", kRoot);
    std::optional<std::string> answer;
    std::mutex m;
    proxy->callMethodAsync("Rescan").onInterface(kManager).uponReplyInvoke(
        [&answer, &m](svad::dbus::compat::AsyncError e) {
            std::lock_guard g(m);
            answer = !e ? std::string("ok") : e->getName() + ": " + e->getMessage();
        });
    connection->enterEventLoopAsync();
    proxy->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
    f.svad().signal(SIGTERM);
    const int st = f.svad().wait(10000);
    ASSERT_NE(st, -1);
    EXPECT_EQ(WEXITSTATUS(st), 0);
    ASSERT_TRUE(waitUntil([&] {
        std::lock_guard g(m);
        return answer.has_value();
    }));
    std::lock_guard g(m);
    EXPECT_EQ(*answer,
              "org.svad.Svad1.Error.KernelError: svad is stopping: the rescan was not finished");
    connection->leaveEventLoop();
}

} // namespace
} // namespace svad::test
