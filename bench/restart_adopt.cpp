// svad's start with the contexts of a last run in its state directory, against
// a start on an empty one, in the same run: a private dbus-daemon, the real
// svad (sim backend) on a generated host of N vfio-pci functions.
//
//   svad_bench_restart_adopt [--contexts N] [--runs R]
//
// Each time runs from exec until svad's name is owned on the bus (it takes the
// name only after it has taken back the contexts of the last run); svad's CPU
// time by then (all threads, from /proc) is printed beside it, as a figure that
// other load on the machine moves less than the wall time. Cases, each the
// median of R runs (interleaved), each run on a fresh copy of its state directory:
//   empty:  --state-dir on an empty directory (the baseline);
//   alive:  N stored contexts, one function each, owned by this process (its
//           pid and start time): svad takes them all back, without fds; then
//           ContextCount and a ListObjects of the contexts must both say N, and
//           PasidCount the PASIDs stored, else the benchmark exits 1;
//   dead:   N stored contexts whose owner is gone (half an exited child's pid,
//           half this pid with another start time): svad releases them all;
//           also the time until ContextCount is 0.
// The state databases are written with svad's own SqliteStateStore before the
// runs; every 8th context holds two PASIDs and a virtual ID. svad serves its
// metrics, as it does by default, on a free loopback port.
#include "fixture.h"
#include "svad/linux/proc.h"
#include "svad/linux/state_sqlite.h"
#include "svad/names.h"
#include "svad/ports/state_store.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using svad::test::Process;

constexpr const char* kService = "org.svad.Svad1";
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

using ObjectMap =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

[[noreturn]] void fail(const std::string& what) {
    (void)std::fprintf(stderr, "%s\n", what.c_str());
    std::exit(1);
}

// A client of its own: a connection, svad's root object and the bus daemon.
class Client {
public:
    explicit Client(const std::string& bus) {
        // dbus-daemon creates its socket a moment before it listens.
        for (int attempt = 1;; ++attempt) {
            try {
                connection_ = sdbus::createSessionBusConnectionWithAddress(bus);
                break;
            } catch (const sdbus::Error&) {
                if (attempt == 50) {
                    throw;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        root_ = svad::dbus::compat::makeProxy(*connection_, kService, kRoot);
        dbus_ = svad::dbus::compat::makeProxy(*connection_, "org.freedesktop.DBus",
                                              "/org/freedesktop/DBus");
    }

    std::string uniqueName() const { return connection_->getUniqueName(); }

    bool nameOwned() {
        bool has = false;
        dbus_->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string(kService))
            .storeResultsTo(has);
        return has;
    }

    uint32_t managerCount(const char* property) {
        return root_->getProperty(property).onInterface(kManager).get<uint32_t>();
    }

    // The context objects ListObjects gives, page by page from the first context path.
    size_t listedContexts() {
        const std::string prefix(svad::names::kContextPrefix);
        std::string start = prefix;
        size_t count = 0;
        while (!start.empty()) {
            ObjectMap page;
            std::string next;
            root_->callMethod("ListObjects")
                .onInterface(kManager)
                .withArguments(start, uint32_t{1024})
                .storeResultsTo(page, next);
            for (const auto& entry : page) {
                if (std::string(entry.first).rfind(prefix, 0) != 0) {
                    return count; // past the contexts
                }
                ++count;
            }
            start = next;
        }
        return count;
    }

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IProxy> root_;
    std::unique_ptr<sdbus::IProxy> dbus_;
};

// The start time of a child that has exited, and its pid: an owner that is gone.
std::pair<pid_t, uint64_t> exitedChild() {
    pid_t child = ::fork();
    if (child < 0) {
        fail("fork failed");
    }
    if (child == 0) {
        ::pause();
        ::_exit(0);
    }
    uint64_t start = svad::linux_impl::processStartTime(child);
    ::kill(child, SIGKILL);
    int st = 0;
    ::waitpid(child, &st, 0);
    if (start == 0) {
        fail("cannot read the start time of a child");
    }
    return {child, start};
}

struct Owner {
    pid_t pid = 0;
    uint64_t startTime = 0;
};

// Writes `count` contexts into DIR/state.db, context i holding devices[i] and owned by
// owners[i % owners.size()]; returns the number of PASIDs stored.
size_t fillState(const std::string& dir, const std::vector<std::string>& devices, size_t count,
                 const std::vector<Owner>& owners, const std::string& busName) {
    auto store = svad::linux_impl::SqliteStateStore::open(dir);
    size_t pasids = 0;
    const uint64_t now =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
    for (size_t i = 0; i < count; ++i) {
        const Owner& owner = owners[i % owners.size()];
        svad::ports::StoredContext c;
        c.id = store->takeContextId();
        c.vm = "vm-" + std::to_string(i);
        c.ownerUid = ::getuid();
        c.ownerPid = owner.pid;
        c.ownerStartTime = owner.startTime;
        c.ownerBusName = busName;
        c.mode = 1; // handoff
        c.createdUsec = now;
        c.devices.push_back({devices[i], 1, 1, "vfio", "bench"});
        if (i % 8 == 0) {
            const auto base = static_cast<uint32_t>(0xfffff - 2 * i);
            c.pasids[base] = devices[i];
            c.pasids[base - 1] = devices[i];
            c.virtualIds[devices[i]] = 0x100 + i;
            pasids += 2;
        }
        store->putContext(c);
    }
    return pasids;
}

// A fresh copy of `from` at `to` (svad may change the database it runs on).
void freshCopy(const std::string& from, const std::string& to) {
    fs::remove_all(to);
    fs::copy(from, to, fs::copy_options::recursive);
}

// The CPU time (user and system, all threads) a process has used so far, in ms.
double cpuMs(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')'); // the command name may hold spaces
    if (close == std::string::npos) {
        return -1;
    }
    std::istringstream fields(stat.substr(close + 2));
    std::string field;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14) {
            utime = std::strtoull(field.c_str(), nullptr, 10);
        } else if (i == 15) {
            stime = std::strtoull(field.c_str(), nullptr, 10);
        }
    }
    return 1000.0 * static_cast<double>(utime + stime) /
           static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Run {
    double named = 0; // ms from exec until the name is owned
    double cpu = 0;   // svad's CPU time by then, in ms
    double gone = 0;  // ms from exec until ContextCount is 0 (dead owners)
};

// One case's medians over its runs.
struct Medians {
    double named = 0;
    double cpu = 0;
    double gone = 0;
};

Medians medians(const std::vector<Run>& runs) {
    std::vector<double> named;
    std::vector<double> cpu;
    std::vector<double> gone;
    for (const auto& r : runs) {
        named.push_back(r.named);
        cpu.push_back(r.cpu);
        gone.push_back(r.gone);
    }
    return {median(named), median(cpu), median(gone)};
}

} // namespace

int main(int argc, char** argv) {
    int contexts = 1000;
    int runs = 5;
    svad::test::parseIntOptions(argc, argv, {{"--contexts", &contexts, 1}, {"--runs", &runs, 1}});
    const auto n = static_cast<size_t>(contexts);

    // The host and the state live in memory (/dev/shm) when they can, so that
    // svad is measured on CPU and syscalls, not on the disk.
    if (::access("/dev/shm", W_OK) == 0 && std::getenv("TMPDIR") == nullptr) {
        ::setenv("TMPDIR", "/dev/shm", 1);
    }
    svad::test::TempDir dir;
    const std::string root = dir.path() + "/host";
    auto host = svad::test::vfioHost("restart-adopt", static_cast<uint32_t>(n));
    svad::hostgen::writeTree(host, root);
    std::vector<std::string> devices;
    for (const auto& d : host.devices) {
        devices.push_back(d.address);
    }

    svad::test::PrivateBus bus(dir.path());
    Client client(bus.address());

    // The three state directories, written before any run.
    const std::string empty = dir.path() + "/state-empty";
    const std::string alive = dir.path() + "/state-alive";
    const std::string dead = dir.path() + "/state-dead";
    fs::create_directory(empty);
    const Owner self{::getpid(), svad::linux_impl::processStartTime(::getpid())};
    if (self.startTime == 0) {
        fail("cannot read this process's start time");
    }
    const auto [childPid, childStart] = exitedChild();
    auto t0 = Clock::now();
    const size_t alivePasids = fillState(alive, devices, n, {self}, client.uniqueName());
    const double fillMs = ms(Clock::now() - t0);
    fillState(dead, devices, n, {{childPid, childStart}, {self.pid, self.startTime + 1}},
              client.uniqueName());
    std::printf("host: %zu vfio-pci functions; state: %zu contexts (%zu PASIDs) written with "
                "SqliteStateStore in %.1f ms\n",
                n, n, alivePasids, fillMs);

    const std::string state = dir.path() + "/state";
    const std::string log = dir.path() + "/svad.log";
    // One start of svad on a fresh copy of `from`; stopped before it returns.
    auto startOnce = [&](const std::string& from, bool waitGone,
                         const std::function<void()>& check) {
        freshCopy(from, state);
        Run r;
        // Metrics on, as by default, but on a port of its own.
        const std::string metrics = "127.0.0.1:" + std::to_string(svad::test::freePort());
        auto s = Clock::now();
        Process p({SVAD_BINARY, "--bus", bus.address(), "--backend", "sim", "--sysfs-root",
                   root + "/sys", "--dev-root", root + "/dev", "--state-dir", state,
                   "--metrics-address", metrics},
                  log);
        while (!client.nameOwned()) {
            if (!p.running()) {
                fail("svad exited: " + p.log());
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        r.named = ms(Clock::now() - s);
        r.cpu = cpuMs(p.pid());
        if (waitGone) {
            const auto deadline = s + std::chrono::seconds(120);
            while (client.managerCount("ContextCount") != 0) {
                if (Clock::now() > deadline) {
                    fail("the contexts of dead owners were not all released within 120 s");
                }
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
            r.gone = ms(Clock::now() - s);
        }
        if (check) {
            check();
        }
        p.signal(SIGTERM);
        if (p.wait(30000) == -1) {
            fail("svad did not stop within 30 s of SIGTERM");
        }
        // The name gone, so that the next run starts from nothing.
        while (client.nameOwned()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return r;
    };

    std::vector<Run> baseline;
    std::vector<Run> adopted;
    std::vector<Run> released;
    uint32_t counted = 0;
    size_t listed = 0;
    uint32_t pasidCount = 0;
    for (int i = 0; i < runs; ++i) {
        // Interleaved, so that drift hits the cases alike.
        baseline.push_back(startOnce(empty, false, {}));
        adopted.push_back(startOnce(alive, false, [&] {
            counted = client.managerCount("ContextCount");
            listed = client.listedContexts();
            pasidCount = client.managerCount("PasidCount");
        }));
        if (counted != n || listed != n || pasidCount != alivePasids) {
            std::printf("after the start with live owners: ContextCount %u, ListObjects %zu "
                        "contexts, PasidCount %u; expected %zu, %zu, %zu\n",
                        counted, listed, pasidCount, n, n, alivePasids);
            return 1;
        }
        released.push_back(startOnce(dead, true, {}));
    }

    const Medians b = medians(baseline);
    const Medians a = medians(adopted);
    const Medians d = medians(released);
    std::printf("medians of %d runs; wall ms from exec (ratio to the empty state dir), and svad's "
                "CPU ms by then (ratio)\n",
                runs);
    std::printf("empty state dir, to name owned:              %8.1f ms          CPU %7.1f ms\n",
                b.named, b.cpu);
    std::printf("%5zu live-owner contexts, to name owned:     %8.1f ms (%5.2fx)  CPU %7.1f ms "
                "(%5.2fx)\n",
                n, a.named, a.named / b.named, a.cpu, a.cpu / b.cpu);
    std::printf("  present after the start: ContextCount %u, ListObjects %zu, PasidCount %u\n",
                counted, listed, pasidCount);
    std::printf("%5zu dead-owner contexts, to name owned:     %8.1f ms (%5.2fx)  CPU %7.1f ms "
                "(%5.2fx)\n",
                n, d.named, d.named / b.named, d.cpu, d.cpu / b.cpu);
    std::printf("%5zu dead-owner contexts, to ContextCount 0: %8.1f ms (%5.2fx)\n", n, d.gone,
                d.gone / b.named);
    return 0;
}
