// Contexts through svactl against the real svad (sim backend): alloc, exec,
// contexts, release, pasid, and what a bad request gives.
#include "fixture.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <gtest/gtest.h>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContextPrefix = "/org/svad/Svad1/context/";
// testHost()'s NIC VFs (PF 0000:3b:00.0, first VF offset 0x80): on vfio-pci with their
// cdevs (vfio1, vfio2), alone in their groups, so viable.
constexpr const char* kVf0 = "0000:3b:10.0";
constexpr const char* kVf1 = "0000:3b:10.1";

size_t lines(const std::string& s) {
    return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
        s.pop_back();
    }
    return s;
}

uint32_t contextCount(SvadFixture& f) {
    return f.property(kRoot, kManager, "ContextCount").get<uint32_t>();
}

// The lease follows a process: its release comes a moment after the exit.
bool waitNoContexts(SvadFixture& f) {
    for (int i = 0; i < 500; ++i) {
        if (contextCount(f) == 0) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// svactl as a command line for `sh -c`, talking to the fixture's bus.
std::string svactlCommand(SvadFixture& f) {
    return std::string("'") + SVACTL_BINARY + "' --bus '" + f.bus() + "'";
}

// Records the Context.Released signals svad emits.
class ReleasedWatcher {
public:
    explicit ReleasedWatcher(const std::string& bus)
        : connection_(sdbus::createSessionBusConnectionWithAddress(bus)) {
        slot_ = svad::dbus::compat::addMatch(
            *connection_,
            "type='signal',sender='org.svad.Svad1',interface='org.svad.Svad1.Context',"
            "member='Released'",
            [this](sdbus::Message& msg) {
                std::string reason;
                msg >> reason;
                std::lock_guard lock(m_);
                released_.emplace_back(msg.getPath(), reason);
                cv_.notify_all();
            });
        connection_->enterEventLoopAsync();
    }
    ~ReleasedWatcher() { connection_->leaveEventLoop(); }

    // The reason `path` was released, or "" after a timeout.
    std::string waitReleased(const std::string& path) {
        std::unique_lock lock(m_);
        std::string reason;
        cv_.wait_for(lock, std::chrono::seconds(10), [&] {
            for (const auto& [p, r] : released_) {
                if (p == path) {
                    reason = r;
                    return true;
                }
            }
            return false;
        });
        return reason;
    }

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    sdbus::Slot slot_;
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<std::pair<std::string, std::string>> released_;
};

TEST(SvactlContexts, TheHostHasViableVfioVfs) {
    SvadFixture f(testHost());
    auto devices = f.svactl({"devices"});
    ASSERT_EQ(devices.exitCode, 0) << devices.errors;
    EXPECT_NE(devices.output.find(kVf0), std::string::npos) << devices.output;
    EXPECT_NE(devices.output.find(kVf1), std::string::npos) << devices.output;
    auto none = f.svactl({"contexts"});
    ASSERT_EQ(none.exitCode, 0) << none.errors;
    EXPECT_EQ(none.output, "no contexts\n");
    auto json = f.svactl({"--json", "contexts"});
    EXPECT_EQ(json.output, "[]\n");
}

TEST(SvactlContexts, AllocShowsTheFdsAndTheLeaseEndsWithSvactl) {
    SvadFixture f(testHost());
    ReleasedWatcher watcher(f.bus());
    auto r = f.svactl({"alloc", "--vm", "t", kVf0, "wq0.0", "vdpa0"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    const std::string& out = r.output;
    auto at = out.find(kContextPrefix);
    ASSERT_NE(at, std::string::npos) << out;
    const std::string context = out.substr(at, out.find('\n', at) - at);
    // Each fd with what it is: the sim backend's memfds are named after the object.
    EXPECT_NE(out.find("iommufd"), std::string::npos) << out;
    EXPECT_NE(out.find("/memfd:svad-sim:iommufd:"), std::string::npos) << out;
    EXPECT_NE(out.find(std::string(kVf0) + "  "), std::string::npos) << out;
    EXPECT_NE(out.find("svad-sim:vfio:vfio1"), std::string::npos) << out;
    // A work queue comes as its node, which the client opens itself.
    EXPECT_NE(out.find("node " + f.devRoot() + "/dsa/wq0.0"), std::string::npos) << out;
    EXPECT_NE(out.find("queue_nodes:"), std::string::npos) << out;
    EXPECT_EQ(out.find("svad-sim:wq"), std::string::npos) << out;
    EXPECT_NE(out.find("svad-sim:vhost-vdpa"), std::string::npos) << out;
    EXPECT_NE(out.find("mode:"), std::string::npos) << out;
    EXPECT_NE(out.find("handoff"), std::string::npos) << out;
    EXPECT_NE(out.find("releases the context when svactl exits"), std::string::npos) << out;
    // svactl owned it and has exited.
    EXPECT_EQ(watcher.waitReleased(context), "owner process exited");
    EXPECT_TRUE(waitNoContexts(f));
}

TEST(SvactlContexts, AllocJsonAttachedWithFaultQueue) {
    SvadFixture f(testHost());
    auto r = f.svactl(
        {"--json", "alloc", "--vm", "t", "--mode", "attached", "--fault-queue", "3b:10.1"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    const std::string& out = r.output;
    EXPECT_EQ(out.rfind("{\"context\":\"/org/svad/Svad1/context/", 0), 0U) << out;
    EXPECT_EQ(lines(out), 1U);
    EXPECT_NE(out.find("\"iommufd\":{\"fd\":"), std::string::npos) << out;
    // The short address was completed.
    EXPECT_NE(out.find("\"device_fds\":{\"0000:3b:10.1\":{\"fd\":"), std::string::npos) << out;
    EXPECT_NE(out.find("\"mode\":\"attached\""), std::string::npos) << out;
    EXPECT_NE(out.find("\"ioas_id\":"), std::string::npos) << out;
    EXPECT_NE(out.find("\"fault_queue_fd\":{\"fd\":"), std::string::npos) << out;
    EXPECT_NE(out.find("svad-sim:fault"), std::string::npos) << out;
    EXPECT_TRUE(waitNoContexts(f));
}

// A work queue reaches the command as its node's path ({path:QUEUE}); an fd
// placeholder for it is a usage error that says what to write instead.
TEST(SvactlContexts, ExecHandsAQueueOverAsItsNodePath) {
    SvadFixture f(testHost());
    auto r = f.svactl({"exec", "--vm", "t", "--device", "wq0.0", "--", "sh", "-c", "echo \"$0\"",
                       "{path:wq0.0}"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(r.output, f.devRoot() + "/dsa/wq0.0\n");
    EXPECT_TRUE(waitNoContexts(f));

    auto fd = f.svactl({"exec", "--vm", "t", "--device", "wq0.0", "--", "echo", "{fd:wq0.0}"});
    EXPECT_EQ(fd.exitCode, 2) << fd.output;
    EXPECT_NE(fd.errors.find("wq0.0 is a work queue"), std::string::npos) << fd.errors;
    EXPECT_NE(fd.errors.find("use {path:wq0.0}"), std::string::npos) << fd.errors;
    // {path:...} of a device that is no queue: svad's reply tells, and svactl says so.
    auto path = f.svactl(
        {"exec", "--vm", "t", "--device", kVf0, "--", "echo", std::string("{path:") + kVf0 + "}"});
    EXPECT_EQ(path.exitCode, 2) << path.output;
    EXPECT_NE(path.errors.find("is not a work queue"), std::string::npos) << path.errors;
    EXPECT_NE(path.errors.find(std::string("use {fd:") + kVf0 + "}"), std::string::npos)
        << path.errors;
    EXPECT_TRUE(waitNoContexts(f));
}

TEST(SvactlContexts, ExecHandsTheFdsToTheCommand) {
    SvadFixture f(testHost());
    auto r = f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "sh", "-c",
                       "readlink /proc/self/fd/$0 ; readlink /proc/self/fd/$1 ; echo \"$2\" ; "
                       "echo \"$SVAD_CONTEXT\"",
                       "{iommufd}", std::string("{fd:") + kVf0 + "}", "ctx={context}"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t nl; (nl = r.output.find('\n', start)) != std::string::npos; start = nl + 1) {
        out.push_back(r.output.substr(start, nl - start));
    }
    ASSERT_EQ(out.size(), 4U) << r.output;
    // The fds were inherited (no FD_CLOEXEC) and the placeholders became their numbers.
    EXPECT_EQ(out[0].rfind("/memfd:svad-sim:iommufd:", 0), 0U) << out[0];
    EXPECT_EQ(out[1].rfind("/memfd:svad-sim:vfio:vfio1", 0), 0U) << out[1];
    EXPECT_EQ(out[2].rfind(std::string("ctx=") + kContextPrefix, 0), 0U) << out[2];
    EXPECT_EQ(out[3], out[2].substr(4));
    EXPECT_TRUE(waitNoContexts(f));
}

TEST(SvactlContexts, ExecContextLivesWhileTheCommandRuns) {
    SvadFixture f(testHost());
    ReleasedWatcher watcher(f.bus());
    const std::string svactl = svactlCommand(f);
    auto r = f.svactl({"exec", "--vm", "vm-a", "--device", kVf0, "--device", "wq0.0", "--", "sh",
                       "-c", svactl + " contexts && echo \"pid $$\" && echo {context}"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    const std::string& out = r.output;
    EXPECT_NE(out.find("CONTEXT"), std::string::npos) << out;
    EXPECT_NE(out.find("vm-a"), std::string::npos) << out;
    EXPECT_NE(out.find(std::string(kVf0) + ",wq0.0"), std::string::npos) << out;
    EXPECT_NE(out.find("handoff"), std::string::npos) << out;
    EXPECT_NE(out.find("active"), std::string::npos) << out;
    // Its owner is the exec'd command's own pid (svactl's, kept across exec).
    auto pidAt = out.find("pid ");
    ASSERT_NE(pidAt, std::string::npos) << out;
    const std::string pid = out.substr(pidAt + 4, out.find('\n', pidAt) - pidAt - 4);
    EXPECT_NE(out.find("/" + pid + " "), std::string::npos) << out;
    const std::string context = trim(out.substr(out.find(kContextPrefix)));
    // After the command exits, svad takes the context back.
    EXPECT_EQ(watcher.waitReleased(context), "owner process exited");
    EXPECT_TRUE(waitNoContexts(f));
    auto after = f.svactl({"contexts"});
    EXPECT_EQ(after.output, "no contexts\n");
}

TEST(SvactlContexts, ExecExitStatusIsTheCommands) {
    SvadFixture f(testHost());
    auto r = f.svactl({"exec", "--vm", "t", "--device", kVf1, "--", "sh", "-c", "exit 7"});
    EXPECT_EQ(r.exitCode, 7) << r.errors;
    EXPECT_TRUE(waitNoContexts(f));
}

TEST(SvactlContexts, PasidAllocAndReleaseInsideExec) {
    SvadFixture f(testHost());
    const std::string svactl = svactlCommand(f);
    auto r = f.svactl(
        {"exec", "--vm", "t", "--device", "wq0.0", "--", "sh", "-c",
         "p=$(" + svactl + " pasid alloc {context} wq0.0) || exit 9; echo \"pasid=$p\"; " + svactl +
             " contexts; " + svactl + " pasid release {context} $p && " + svactl + " contexts"});
    ASSERT_EQ(r.exitCode, 0) << r.errors << r.output;
    const std::string& out = r.output;
    auto at = out.find("pasid=");
    ASSERT_NE(at, std::string::npos) << out;
    const std::string pasid = out.substr(at + 6, out.find('\n', at) - at - 6);
    ASSERT_FALSE(pasid.empty());
    EXPECT_EQ(pasid.find_first_not_of("0123456789"), std::string::npos) << pasid;
    EXPECT_NE(out.find(pasid + "@wq0.0"), std::string::npos) << out;
    EXPECT_NE(out.find("released PASID " + pasid), std::string::npos) << out;
    // The second listing shows no PASID any more: its last line ends with "-".
    EXPECT_EQ(trim(out).back(), '-') << out;
    EXPECT_TRUE(waitNoContexts(f));
}

TEST(SvactlContexts, ReleaseByNumberAndByPath) {
    SvadFixture f(testHost());
    ReleasedWatcher watcher(f.bus());
    const std::string svactl = svactlCommand(f);
    // Inside the command the context is released by hand; the lease then has nothing to do.
    auto r = f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "sh", "-c",
                       svactl + " release {context} && " + svactl + " --json contexts"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("released /org/svad/Svad1/context/"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("[]"), std::string::npos) << r.output;
    const std::string context = trim(r.output.substr(
        r.output.find(kContextPrefix), r.output.find('\n') - r.output.find(kContextPrefix)));
    EXPECT_EQ(watcher.waitReleased(context), "released by the owner");

    // By number: N of /org/svad/Svad1/context/N.
    r = f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "sh", "-c",
                  "n=${SVAD_CONTEXT##*/}; " + svactl + " release $n && " + svactl + " contexts"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("no contexts"), std::string::npos) << r.output;
    EXPECT_EQ(contextCount(f), 0U);

    auto gone = f.svactl({"release", "42"});
    EXPECT_EQ(gone.exitCode, 1);
    EXPECT_NE(gone.errors.find("/org/svad/Svad1/context/42"), std::string::npos) << gone.errors;
    EXPECT_EQ(lines(gone.errors), 1U) << gone.errors;
    auto bad = f.svactl({"release", "ctx7"});
    EXPECT_EQ(bad.exitCode, 2);
    EXPECT_NE(bad.errors.find("ctx7"), std::string::npos) << bad.errors;
}

TEST(SvactlContexts, AHeldDeviceIsBusyForAnotherVm) {
    SvadFixture f(testHost());
    const std::string svactl = svactlCommand(f);
    auto r = f.svactl({"exec", "--vm", "a", "--device", kVf0, "--", "sh", "-c",
                       svactl + " alloc --vm b " + kVf0 + "; echo \"status $?\""});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("status 1"), std::string::npos) << r.output;
    EXPECT_NE(r.errors.find(kVf0), std::string::npos) << r.errors;
    EXPECT_NE(r.errors.find("Busy"), std::string::npos) << r.errors;
    EXPECT_EQ(lines(r.errors), 1U) << r.errors;
    EXPECT_TRUE(waitNoContexts(f));
}

// --wait: a device held by another context is asked for again until it is free.
// The holder's command releases after a second; the waiting alloc then gets it.
TEST(SvactlContexts, AllocWaitsForAHeldDevice) {
    SvadFixture f(testHost());
    const std::string svactl = svactlCommand(f);
    auto r =
        f.svactl({"exec", "--vm", "a", "--device", kVf0, "--", "sh", "-c",
                  "(sleep 1; " + svactl + " release {context} >/dev/null) & " + svactl +
                      " --json alloc --wait 10 --vm b " + kVf0 + "; echo \"status $?\"; wait"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("status 0"), std::string::npos) << r.output << r.errors;
    EXPECT_NE(r.output.find("\"context\":"), std::string::npos) << r.output;
    // No terminal: no progress lines.
    EXPECT_TRUE(r.errors.empty()) << r.errors;

    // A wait that runs out is the Busy error, as without --wait.
    r = f.svactl({"exec", "--vm", "a", "--device", kVf0, "--", "sh", "-c",
                  svactl + " alloc --wait 1 --vm b " + kVf0 + "; echo \"status $?\""});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("status 1"), std::string::npos) << r.output;
    EXPECT_NE(r.errors.find("Busy"), std::string::npos) << r.errors;
    EXPECT_EQ(lines(r.errors), 1U) << r.errors;

    // Any other error ends the wait at once.
    const auto start = std::chrono::steady_clock::now();
    r = f.svactl({"alloc", "--wait", "30", "--vm", "t", "0000:ff:00.0"});
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
    for (const char* bad : {"-1", "x", "86401"}) {
        r = f.svactl({"alloc", "--wait", bad, "--vm", "t", kVf0});
        EXPECT_EQ(r.exitCode, 2) << bad;
        EXPECT_NE(r.errors.find("--wait"), std::string::npos) << r.errors;
    }
    EXPECT_TRUE(waitNoContexts(f));
}

// On a terminal (script(1) gives svactl a pseudo-terminal), the wait shows what it
// waits for, then clears the line.
TEST(SvactlContexts, AWaitShowsProgressOnATerminal) {
    SvadFixture f(testHost());
    const std::string svactl = svactlCommand(f);
    auto r = f.svactl(
        {"exec", "--vm", "a", "--device", kVf0, "--", "sh", "-c",
         "(sleep 1; " + svactl + " release {context} >/dev/null) & script -q -e -c \"" + svactl +
             " alloc --wait 10 --vm b " + kVf0 + "\" /dev/null; echo \"status $?\"; wait"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("status 0"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("waiting: " + std::string(kVf0)), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("\r\033[K"), std::string::npos) << "the line is cleared";
    EXPECT_NE(r.output.find("context  /org/svad/Svad1/context/"), std::string::npos) << r.output;
}

// A failure: the exit status, one line on stderr naming `what`, nothing on stdout.
void expectFailure(const RunResult& r, int code, const std::string& what) {
    EXPECT_EQ(r.exitCode, code) << r.output << r.errors;
    EXPECT_NE(r.errors.find(what), std::string::npos) << r.errors;
    EXPECT_EQ(lines(r.errors), 1U) << r.errors;
    EXPECT_EQ(r.errors.rfind("svactl: ", 0), 0U) << r.errors;
    EXPECT_TRUE(r.output.empty()) << r.output;
}

TEST(SvactlContexts, BadRequestsAreOneLineErrors) {
    SvadFixture f(testHost());
    // From svad: exit 1.
    expectFailure(f.svactl({"alloc", "--vm", "t", "0000:ff:00.0"}), 1, "0000:ff:00.0");
    // The GPU is on vfio-pci, but its audio function keeps group 3 on the host.
    expectFailure(f.svactl({"alloc", "--vm", "t", "0000:17:00.0"}), 1, "0000:17:00.1");
    expectFailure(f.svactl({"exec", "--vm", "t", "--device", "0000:17:00.0", "--", "true"}), 1,
                  "0000:17:00.1");
    expectFailure(f.svactl({"alloc", "--vm", "", kVf0}), 1, "vm");
    expectFailure(f.svactl({"exec", "--vm", "", "--device", kVf0, "--", "true"}), 1, "vm");
    // A kernel work queue has no user node.
    expectFailure(f.svactl({"alloc", "--vm", "t", "wq0.2"}), 1, "wq0.2");
    expectFailure(f.svactl({"pasid", "alloc", "9", "wq0.0"}), 1, "/org/svad/Svad1/context/9");

    // Usage: exit 2, before anything is allocated.
    expectFailure(f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "echo", "{iommu}"}), 2,
                  "{iommu}");
    expectFailure(f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "echo", "{fd:wq0.0}"}), 2,
                  "wq0.0");
    expectFailure(f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "echo", "{fault_queue}"}),
                  2, "--fault-queue");
    expectFailure(f.svactl({"exec", "--vm", "t", "--device", kVf0}), 2, "COMMAND");
    expectFailure(f.svactl({"alloc", kVf0}), 2, "--vm");
    expectFailure(f.svactl({"alloc", "--vm", "t", "--mode", "nested", kVf0}), 2, "nested");
    expectFailure(f.svactl({"alloc", "--vm", "t", "--owner-pid", "me", kVf0}), 2, "me");
    expectFailure(f.svactl({"pasid", "free", "1", "7"}), 2, "pasid");
    expectFailure(f.svactl({"pasid", "release", "1", "x7"}), 2, "x7");
    // A command that cannot be found: 127, as a shell says, and nothing allocated.
    expectFailure(
        f.svactl({"exec", "--vm", "t", "--device", kVf0, "--", "/nonexistent/qemu", "{iommufd}"}),
        127, "/nonexistent/qemu");
    EXPECT_EQ(contextCount(f), 0U);

    // Braces that are not placeholders pass through untouched.
    auto r = f.svactl(
        {"exec", "--vm", "t", "--device", kVf0, "--", "echo", "${x}", "{}", "{print $1}", "{a,b}"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(r.output, "${x} {} {print $1} {a,b}\n");
    EXPECT_TRUE(waitNoContexts(f));
    EXPECT_TRUE(f.svad().running());
}

} // namespace
} // namespace svad::test
