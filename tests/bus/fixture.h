// Bus-test fixture: a private dbus-daemon, a generated host tree and the
// real svad binary, driven the way a client drives them.
#pragma once

#include "svad/dbus/sdbus_compat.h"
#include "svad/hostgen/hostgen.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <poll.h>
#include <sdbus-c++/sdbus-c++.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace svad::test {

// A temporary directory removed (recursively) on destruction.
class TempDir {
public:
    TempDir();
    // Under `base` instead of the temporary directory.
    explicit TempDir(const std::string& base);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// A child process with its stdout+stderr captured to a file.
class Process {
public:
    // `passFds` go to the child as a service manager passes stored fds: at 3,
    // 4, ... with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
    Process(const std::vector<std::string>& argv, const std::string& logFile,
            const std::vector<std::pair<std::string, int>>& passFds = {});
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    void signal(int sig);
    // Waits up to timeoutMs for the exit; returns the wait status, or -1 on timeout.
    int wait(int timeoutMs);
    std::string log() const;

private:
    pid_t pid_ = -1;
    int status_ = -1;
    std::string logFile_;
};

class PrivateBus {
public:
    // A session-type bus; with a configFile, dbus-daemon runs on that configuration
    // instead (a bus other users may join, or one under svad's system-bus policy).
    explicit PrivateBus(const std::string& dir, const std::string& configFile = {});
    const std::string& address() const { return address_; }
    Process& daemon() { return *daemon_; }

private:
    std::string address_;
    std::unique_ptr<Process> daemon_;
};

struct RunResult {
    int exitCode = -1;
    std::string output; // stdout
    std::string errors; // stderr
};

// A benchmark's "--name N" option: the int it sets and the smallest value it takes.
struct IntOption {
    const char* name;
    int* value;
    int min;
};
// Parses a benchmark's command line of "--name N" options; on anything else prints
// what is wrong on stderr and exits 2.
void parseIntOptions(int argc, char** argv, std::initializer_list<IntOption> options);

// Runs a command to completion (argv[0] is a path or found on PATH).
RunResult runCommand(const std::vector<std::string>& argv);

// Polls `done` every 20 ms until it holds or timeoutMs passed; its last answer.
bool waitUntil(const std::function<bool()>& done, int timeoutMs = 5000);

// The 50th and 99th percentiles of a sample (benchmarks).
struct Percentiles {
    double p50 = 0;
    double p99 = 0;
};
Percentiles percentiles(std::vector<double> sample);
// A duration in microseconds (benchmarks).
double micros(std::chrono::steady_clock::duration d);
// A host of `count` vfio-pci functions 0000:BB:DD.0 from 0000:81:00.0, each alone in its
// IOMMU group with a VFIO cdev, behind one Sapphire Rapids-like VT-d unit (benchmarks).
hostgen::HostSpec vfioHost(const std::string& name, uint32_t count);

// How many fds a process has open (-1: it is not there).
int fdCount(pid_t pid);
// A process's resident set (VmRSS of /proc/PID/status) in KiB; -1 if unknown.
long rssKiB(pid_t pid);

// A loopback TCP port free at the time of the call.
uint16_t freePort();
// GET http://127.0.0.1:PORT/PATH; the body, or throws std::runtime_error.
std::string httpGet(uint16_t port, const std::string& path = "/metrics");
// The value of a series in a Prometheus text exposition ("name{a=\"b\"}"), or -1 if absent.
double metricValue(const std::string& exposition, const std::string& series);

// AllocateContext(vm, devices, {}) from a connection of its own that did not negotiate
// unix fd passing, waiting up to timeoutUsec: the D-Bus error name it fails with ("" if it
// succeeds; org.freedesktop.DBus.Error.Timeout or NoReply when no answer came).
std::string allocateWithoutFdPassing(const std::string& bus, const std::string& vm,
                                     const std::vector<std::string>& devices, uint64_t timeoutUsec);

// A small SVA host for the bus tests: one VT-d unit, a DSA with queues, a NIC
// with VFs and a vDPA device, a non-viable two-device group, a device with a
// truncated config space.
hostgen::HostSpec testHost();

// A system-type dbus-daemon configuration in `dir` (dbus-daemon's built-in limits:
// 32 MiB messages) that every local user may join; with `svadPolicy`, under svad's
// shipped system-bus policy (dbus/org.svad.Svad1.conf), else anyone may own names.
std::string systemBusConfig(const TempDir& dir, bool svadPolicy);

// A datagram socket standing in for the service manager's notify socket.
class NotifySocket {
public:
    explicit NotifySocket(const std::string& path) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        (void)std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
            throw std::runtime_error("cannot bind " + path);
        }
    }
    ~NotifySocket() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    // The next datagram, or "" after timeoutMs.
    std::string next(int timeoutMs) {
        struct pollfd p {
            fd_, POLLIN, 0
        };
        if (::poll(&p, 1, timeoutMs) <= 0) {
            return "";
        }
        char buf[4096];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    }
    // Reads datagrams until one contains `what`; returns it, or "" after timeoutMs.
    std::string waitFor(const std::string& what, int timeoutMs) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
        while (std::chrono::steady_clock::now() < deadline) {
            std::string m = next(50);
            if (m.find(what) != std::string::npos) {
                return m;
            }
        }
        return "";
    }

    const std::string& path() const { return path_; }

private:
    std::string path_;
    int fd_ = -1;
};

// Plays a service manager's part for svad's fd store: a NOTIFY_SOCKET that
// keeps the fds sent with FDSTORE=1 under their FDNAME, drops a name on
// FDSTOREREMOVE=1, and reads everything else away (a full socket would block
// svad's notifications).
class FdStoreManager {
public:
    explicit FdStoreManager(const std::string& path);
    ~FdStoreManager();
    FdStoreManager(const FdStoreManager&) = delete;
    FdStoreManager& operator=(const FdStoreManager&) = delete;
    const std::string& path() const { return path_; }
    // What it holds now, by name (the fds stay its own).
    std::vector<std::pair<std::string, int>> stored();

private:
    void run();
    // Takes one message from the socket, if one is there; under mutex_.
    bool receiveLocked();
    std::string path_;
    int fd_ = -1;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::map<std::string, std::vector<int>> store_;
    std::thread reader_;
};

// What AllocateContext answers.
struct Allocated {
    sdbus::ObjectPath path;
    sdbus::UnixFd iommufd;
    std::map<std::string, sdbus::UnixFd> fds;
    std::map<std::string, sdbus::Variant> info;
};
// AllocateContext through `manager` (a proxy of /org/svad/Svad1).
Allocated allocateContext(sdbus::IProxy& manager, const std::string& vm,
                          const std::vector<std::string>& devices,
                          const std::map<std::string, sdbus::Variant>& options = {});

class SvadFixture {
public:
    // The host tree goes to `hostRoot` when given (an empty directory; a umockdev testbed's),
    // else into the fixture's own directory. Metrics are off unless extraArgs say otherwise.
    // With a busConfig, the private dbus-daemon runs on that configuration.
    // `alterTree`, when given, changes the written tree (its sysfs root) before svad starts.
    explicit SvadFixture(const hostgen::HostSpec& host, std::vector<std::string> extraArgs = {},
                         const std::string& hostRoot = {}, const std::string& busConfig = {},
                         const std::function<void(const std::string&)>& alterTree = {});
    ~SvadFixture();

    const std::string& bus() const { return bus_->address(); }
    const std::string& root() const { return dir_.path(); }
    std::string sysfs() const { return hostRoot_ + "/sys"; }
    std::string devRoot() const { return hostRoot_ + "/dev"; }
    Process& svad() { return *svad_; }
    Process& busDaemon() { return bus_->daemon(); }
    // A client connection of the test's own.
    sdbus::IConnection& client() { return *client_; }
    std::unique_ptr<sdbus::IProxy> proxy(const std::string& path);
    // AllocateContext(vm, devices, {}) as this test's client; the context's path.
    sdbus::ObjectPath allocate(const std::string& vm, const std::vector<std::string>& devices);
    sdbus::Variant property(const std::string& path, const std::string& iface,
                            const std::string& name);
    RunResult svactl(std::vector<std::string> args);
    // Stops svad with `sig` and starts it again with the same arguments, on the
    // same bus and host; returns once it owns its name.
    void restart(int sig, const std::vector<std::pair<std::string, int>>& passFds = {});

private:
    void waitForName();

    TempDir dir_;
    std::vector<std::string> argv_;
    size_t functions_ = 0;
    int starts_ = 0;
    std::string hostRoot_;
    std::unique_ptr<PrivateBus> bus_;
    std::unique_ptr<Process> svad_;
    std::unique_ptr<sdbus::IConnection> client_;
};

// svad on testHost() as a service manager with a watchdog would start it:
// NOTIFY_SOCKET is `sock`, WATCHDOG_USEC 200 ms.
std::unique_ptr<SvadFixture> underWatchdog(const NotifySocket& sock,
                                           std::vector<std::string> extraArgs = {});

} // namespace svad::test
