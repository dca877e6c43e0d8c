// The service manager's side: the test plays systemd with its own
// NOTIFY_SOCKET and WATCHDOG_USEC and reads what svad tells it.
#include "fixture.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace svad::test {
namespace {

TEST(ServiceManager, ReadyStatusWatchdogStopping) {
    TempDir dir;
    NotifySocket sock(dir.path() + "/notify");
    auto fixture = underWatchdog(sock);

    // The test's dbus-daemon inherits NOTIFY_SOCKET too and says a bare READY=1.
    const std::string ready = sock.waitFor("READY=1\nSTATUS=", 5000);
    ASSERT_FALSE(ready.empty());
    EXPECT_NE(ready.find("STATUS=7 devices (2 with PASID), 7 groups, 1 units, 3 queues, 2 vDPA"),
              std::string::npos)
        << ready;
    EXPECT_NE(ready.find("MAINPID=" + std::to_string(fixture->svad().pid())), std::string::npos);

    // Pings at half of WATCHDOG_USEC: several within half a second.
    int pings = 0;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(550);
    while (std::chrono::steady_clock::now() < until) {
        pings += sock.next(50).find("WATCHDOG=1") != std::string::npos ? 1 : 0;
    }
    EXPECT_GE(pings, 3);
    EXPECT_LE(pings, 8);

    // A rescan brings a fresh STATUS line.
    fixture->proxy("/org/svad/Svad1")->callMethod("Rescan").onInterface("org.svad.Svad1.Manager");
    EXPECT_FALSE(sock.waitFor("STATUS=7 devices", 2000).empty());

    fixture->svad().signal(SIGTERM);
    EXPECT_FALSE(sock.waitFor("STOPPING=1", 5000).empty());
    int st = fixture->svad().wait(5000);
    ASSERT_NE(st, -1);
    EXPECT_EQ(WEXITSTATUS(st), 0);
}

// The pings that came in within `ms`.
int countPings(NotifySocket& sock, int ms) {
    int pings = 0;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
        pings += sock.next(20).find("WATCHDOG=1") != std::string::npos ? 1 : 0;
    }
    return pings;
}

// A ping says svad serves: each goes through the bus and back. While the bus
// delivers nothing (its daemon stopped), systemd hears nothing and would
// restart svad; when the bus comes back, so do the pings.
TEST(ServiceManager, WatchdogPingsOnlyWhileTheBusAnswers) {
    TempDir dir;
    NotifySocket sock(dir.path() + "/notify");
    auto fixture = underWatchdog(sock);
    ASSERT_FALSE(sock.waitFor("READY=1\nSTATUS=", 5000).empty());
    EXPECT_GE(countPings(sock, 550), 3);

    ::kill(fixture->busDaemon().pid(), SIGSTOP);
    (void)countPings(sock, 150); // one already on its way back may still land
    EXPECT_EQ(countPings(sock, 1000), 0);
    ::kill(fixture->busDaemon().pid(), SIGCONT);
    EXPECT_GE(countPings(sock, 1000), 2);
}

// A svad whose bus goes away says so and exits non-zero, so that systemd
// restarts it, instead of living on deaf.
TEST(ServiceManager, LosingTheBusIsFatalAndLoud) {
    SvadFixture f(testHost());
    ::kill(f.busDaemon().pid(), SIGKILL);
    int st = f.svad().wait(5000);
    ASSERT_NE(st, -1) << "svad still runs without its bus";
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 1);
    EXPECT_NE(f.svad().log().find("lost the bus connection"), std::string::npos) << f.svad().log();
}

// READY=1 means the name is owned: an svad that cannot own it says nothing of the kind.
TEST(ServiceManager, NoReadyWithoutTheName) {
    SvadFixture first(testHost());
    TempDir dir;
    NotifySocket sock(dir.path() + "/notify");
    hostgen::writeTree(testHost(), dir.path() + "/host");
    ::setenv("NOTIFY_SOCKET", (dir.path() + "/notify").c_str(), 1);
    auto r = runCommand({SVAD_BINARY, "--bus", first.bus(), "--backend", "sim", "--sysfs-root",
                         dir.path() + "/host/sys", "--dev-root", dir.path() + "/host/dev",
                         "--metrics-address", "off"});
    ::unsetenv("NOTIFY_SOCKET");
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("cannot own org.svad.Svad1"), std::string::npos) << r.errors;
    for (std::string m = sock.next(200); !m.empty(); m = sock.next(200)) {
        EXPECT_EQ(m.find("READY=1"), std::string::npos) << m;
    }
}

TEST(ServiceManager, SilentWithoutNotifySocket) {
    // No NOTIFY_SOCKET: svad runs and stops as usual.
    ::unsetenv("NOTIFY_SOCKET");
    SvadFixture f(testHost());
    f.svad().signal(SIGTERM);
    int st = f.svad().wait(5000);
    ASSERT_NE(st, -1);
    EXPECT_EQ(WEXITSTATUS(st), 0);
}

} // namespace
} // namespace svad::test
