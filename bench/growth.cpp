// How svad grows with the host's size and with the contexts it holds: each
// figure per PCI function or per context, and its ratio to the same figure at
// the smallest size, in the same run; beside each per-call figure the bus's
// floor, a Peer.Ping taken in turns with it.
//
//   svad_bench_growth [--functions LIST] [--contexts LIST] [--runs R] [--calls C] [--quick]
//
// LIST is comma-separated, or "none" to skip that part (defaults: functions
// 1024,4096,16384; contexts 100,1000,10000; --quick: 1024,4096 and 100,1000).
// One private dbus-daemon configured as a system-type bus (32 MiB messages)
// serves the whole run; the real svad (sim backend) runs on it with a
// configuration of its own: svad's plugins from the build tree and a rule that
// gives the benchmark's VMs every PCI function (each allocation passes the
// policy), and metrics served on a free loopback port.
//
// Host sizes (hostgen::synthesize, the mix the cold-start benchmark reads), per size:
//   cold start  exec until svad owns its name (it takes it once every object is
//               registered), median of R starts
//   RSS         VmRSS once the name is owned (median of the R starts)
//   listing     ListObjects(start, 0) paged from "" until next is "", read with
//               sd-bus and skipped over (svad's and the bus's cost, no decoding),
//               as a client reads a host too large for GetManagedObjects (median
//               of R, after one untimed)
//   Get         Properties.Get of a vfio-pci function's Driver (median of C)
//   alloc       AllocateContext of that function, then ReleaseContext (median of C)
//   Ping        a Peer.Ping after each Get and each alloc (median of C each)
//   rescan      a Rescan call (median of R), and the slowest Ping a second
//               client, pinging without pause, got meanwhile: the loop's longest turn
// Cold start, RSS and listing are printed per function, with the ratio of that
// slope to the smallest host's (target 0.75-1.25: growth in proportion) and the
// marginal slope from the size before (what a function adds, fixed costs left
// out); Get and alloc per call, over their Ping, and the growth of that ratio
// from the smallest host (target <= 1.25: they should not grow with the host;
// the Ping taken in turns keeps the machine's drift over a run of minutes out).
//
// Context counts: one host of max(LIST)+1 vfio-pci functions, one IOMMU group
// each. This program allocates contexts of one function each (VM bench-ctx-I)
// and holds them: a context ends when its owner's connection goes. At each
// count N, counted up from the last:
//   RSS         above the RSS with none held, per context (each read with a
//               full listing before it, so that what a listing leaves counts alike)
//   allocation  the time the N allocations took, one after the other, per context
//   listing     a full listing as above, per object (the host's objects among
//               them: the listing with none held is printed for reference)
//   Get         Properties.Get of a held context's Vm (median of C)
//   alloc       AllocateContext+ReleaseContext of the spare function with N held
//               (median of C; Get and alloc each in turns with a Ping, as above)
// with the same ratios to the smallest N, and svad's open fds per context. svad
// inherits this program's open-files limit, raised as far as it may be: a count
// whose fds would pass it is cut to what fits, with a note saying so.
//
// Trees go to /dev/shm when it is a tmpfs (writing and removing the files of
// 16,384 functions on a disk takes minutes) and are removed after each host.
#include "fixture.h"
#include "svad/dbus/sdbus_compat.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <linux/magic.h>
#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <systemd/sd-bus.h>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using svad::test::Process;

constexpr const char* kService = "org.svad.Svad1";
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kDevice = "org.svad.Svad1.Device";
constexpr const char* kContext = "org.svad.Svad1.Context";

double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// A bad command line: nothing is started yet.
[[noreturn]] void usage(const std::string& what) {
    (void)std::fprintf(stderr, "%s\n", what.c_str());
    std::exit(2);
}

// Thrown to main, so that svad, the bus and the trees go on the way out.
[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what);
}

// Where a tree of many small files is cheap to write and to remove: a tmpfs
// (/dev/shm) when there is one, else the temporary directory.
std::string scratchBase() {
    struct statfs st {};
    if (::statfs("/dev/shm", &st) == 0 && st.f_type == TMPFS_MAGIC &&
        ::access("/dev/shm", W_OK) == 0) {
        return "/dev/shm";
    }
    return fs::temp_directory_path().string();
}

// "none", or comma-separated counts from 1 to 1,000,000; sorted, each once.
std::vector<uint32_t> parseList(const std::string& flag, const std::string& text) {
    std::vector<uint32_t> out;
    if (text == "none") {
        return out;
    }
    std::istringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 1 || v > 1000000) {
            usage(flag + " takes counts from 1 to 1000000 separated by commas, or none; not '" +
                  text + "'");
        }
        out.push_back(static_cast<uint32_t>(v));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (out.empty()) {
        usage(flag + " needs at least one count");
    }
    return out;
}

// A client of its own: a connection, svad's root object and the bus daemon.
class Client {
public:
    explicit Client(const std::string& bus) {
        connection_ = sdbus::createSessionBusConnectionWithAddress(bus);
        root_ = proxy(kRoot);
        dbus_ = svad::dbus::compat::makeProxy(*connection_, "org.freedesktop.DBus",
                                              "/org/freedesktop/DBus");
    }

    std::unique_ptr<sdbus::IProxy> proxy(const std::string& path) {
        return svad::dbus::compat::makeProxy(*connection_, kService, path);
    }

    bool nameOwned() {
        bool has = false;
        dbus_->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string(kService))
            .storeResultsTo(has);
        return has;
    }

    void ping() { root_->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer"); }

    void rescan() { root_->callMethod("Rescan").onInterface(kManager); }

    sdbus::ObjectPath allocate(const std::string& vm, const std::string& device) {
        const svad::test::Allocated a = svad::test::allocateContext(*root_, vm, {device});
        if (!a.iommufd.isValid() || a.fds.count(device) == 0) {
            fail("AllocateContext gave no fds for " + device);
        }
        return a.path; // the fds close here, as a VMM that is done with them would
    }

    void release(const sdbus::ObjectPath& context) {
        root_->callMethod("ReleaseContext").onInterface(kManager).withArguments(context);
    }

    std::vector<sdbus::ObjectPath> devices(const std::map<std::string, sdbus::Variant>& filter) {
        std::vector<sdbus::ObjectPath> out;
        root_->callMethod("ListDevices")
            .onInterface(kManager)
            .withArguments(filter)
            .storeResultsTo(out);
        return out;
    }

    uint32_t contextCount() {
        return root_->getProperty("ContextCount").onInterface(kManager).get<uint32_t>();
    }

    // Every page of ListObjects from "" with svad's own page size; the objects read.
    // The pages are read with sd-bus and skipped over, not decoded into
    // variants: the figure is svad's and the bus's, not a client library's.
    size_t listAll() {
        sd_bus* bus = svad::dbus::compat::rawBus(*connection_);
        size_t objects = 0;
        std::string start;
        do {
            sd_bus_error error = SD_BUS_ERROR_NULL;
            sd_bus_message* reply = nullptr;
            int r = sd_bus_call_method(bus, kService, kRoot, kManager, "ListObjects", &error,
                                       &reply, "su", start.c_str(), uint32_t{0});
            if (r < 0) {
                const std::string what = error.message != nullptr ? error.message : "?";
                sd_bus_error_free(&error);
                throw std::runtime_error("ListObjects: " + what);
            }
            r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");
            while (r >= 0 && (r = sd_bus_message_skip(reply, "{oa{sa{sv}}}")) > 0) {
                ++objects;
            }
            r = r < 0 ? r : sd_bus_message_exit_container(reply);
            const char* next = nullptr;
            r = r < 0 ? r : sd_bus_message_read_basic(reply, SD_BUS_TYPE_STRING, &next);
            start = r >= 0 && next != nullptr ? next : "";
            sd_bus_message_unref(reply);
            if (r < 0) {
                throw std::runtime_error("ListObjects: a malformed page");
            }
        } while (!start.empty());
        return objects;
    }

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IProxy> root_;
    std::unique_ptr<sdbus::IProxy> dbus_;
};

// What every svad of the run shares: the bus, a client, the configuration.
struct Setup {
    std::string dir;
    std::string bus;
    std::string config;
    Client* client = nullptr;
    int starts = 0;
};

// Starts svad on the tree at `root`; returns once it owns its name, with the
// time from exec in `readyMs`.
std::unique_ptr<Process> startSvad(Setup& s, const std::string& root, double* readyMs) {
    const std::string metrics = "127.0.0.1:" + std::to_string(svad::test::freePort());
    const std::string log = s.dir + "/svad." + std::to_string(++s.starts) + ".log";
    const auto t0 = Clock::now();
    auto p = std::make_unique<Process>(
        std::vector<std::string>{SVAD_BINARY, "--bus", s.bus, "--backend", "sim", "--sysfs-root",
                                 root + "/sys", "--dev-root", root + "/dev", "--config", s.config,
                                 "--metrics-address", metrics},
        log);
    while (!s.client->nameOwned()) {
        if (!p->running()) {
            fail("svad exited: " + p->log());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    *readyMs = ms(Clock::now() - t0);
    return p;
}

// SIGTERM, and the name gone, so that the next start begins from nothing.
void stopSvad(Setup& s, std::unique_ptr<Process>& p) {
    p->signal(SIGTERM);
    if (p->wait(120000) == -1) {
        fail("svad did not stop on SIGTERM");
    }
    if (!svad::test::waitUntil([&s] { return !s.client->nameOwned(); }, 30000)) {
        fail("svad's name stayed on the bus");
    }
    p.reset();
}

// Medians of `calls` runs each of `op` and of `base`, taken in turns (after a
// tenth as many of each for warm-up), in microseconds: both see the machine as
// it is at that moment.
template <typename Op, typename Base>
std::pair<double, double> pairedMedians(int calls, Op op, Base base) {
    std::vector<double> ops;
    std::vector<double> bases;
    ops.reserve(static_cast<size_t>(calls));
    bases.reserve(static_cast<size_t>(calls));
    for (int i = 0; i < calls / 10 + calls; ++i) {
        const auto t0 = Clock::now();
        op();
        const auto t1 = Clock::now();
        base();
        const auto t2 = Clock::now();
        if (i >= calls / 10) {
            ops.push_back(svad::test::micros(t1 - t0));
            bases.push_back(svad::test::micros(t2 - t1));
        }
    }
    return {median(ops), median(bases)};
}

void call(const char* what, const std::function<void()>& op) {
    try {
        op();
    } catch (const sdbus::Error& e) {
        fail(std::string(what) + ": " + e.getName() + ": " + e.getMessage());
    }
}

// A figure that should grow in proportion to the size: printed per unit, with
// its ratio to the smallest size's and the marginal slope from the size before.
struct Row {
    uint32_t size;
    double total;
    double per;      // total * scale / size, or given
    double ping = 0; // printFlat: the Ping measured in turns with `per`
};

void printSlope(const char* title, const char* sizeName, const char* totalUnit, double scale,
                const char* perUnit, const std::vector<Row>& rows, bool marginal = true) {
    std::printf("\n%s\n", title);
    std::printf("  %10s %12s %16s %10s   %-18s %s\n", sizeName, totalUnit, perUnit, "ratio", "",
                marginal ? "marginal" : "");
    for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        const double ratio = r.per / rows.front().per;
        std::printf("  %10u %12.1f %16.3f %9.2fx   %-18s", r.size, r.total, r.per, ratio,
                    i == 0 ? "" : "target 0.75-1.25");
        if (marginal && i > 0) {
            const Row& p = rows[i - 1];
            std::printf(" %.3f", (r.total - p.total) * scale / (r.size - p.size));
        }
        std::printf("\n");
    }
}

// A per-call figure that should not grow, beside the Ping measured in turns
// with it: its ratio to that Ping, and the growth of that ratio from the
// smallest size (a run lasts minutes, and the machine's speed drifts).
void printFlat(const char* title, const char* sizeName, const std::vector<Row>& rows) {
    std::printf("\n%s\n", title);
    std::printf("  %10s %10s %10s %10s %10s\n", sizeName, "us", "Ping us", "x Ping", "growth");
    for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        const double x = r.per / r.ping;
        std::printf("  %10u %10.1f %10.1f %9.2fx %9.2fx   %s\n", r.size, r.per, r.ping, x,
                    x / (rows.front().per / rows.front().ping), i == 0 ? "" : "target <= 1.25");
    }
}

struct HostFigures {
    uint32_t functions = 0;
    size_t objects = 0;
    double startMs = 0;
    double rssKiB = 0;
    double listMs = 0;
    double getUs = 0;
    double getPingUs = 0; // Ping in turns with the Get
    double allocUs = 0;
    double allocPingUs = 0;
    double rescanMs = 0;      // a Rescan call, median of R
    double slowestPingUs = 0; // the slowest Ping another client got while svad rescanned
    size_t pingsDuring = 0;
};

// Rescans `runs` times while a second client pings svad without pause: how
// long a rescan takes, and how long the loop kept a caller waiting meanwhile.
void measureRescan(Setup& s, int runs, HostFigures& h) {
    Client pinger(s.bus);
    std::atomic<bool> done{false};
    std::vector<double> during;
    std::string pingError;
    std::thread t([&] {
        try {
            while (!done.load()) {
                const auto p0 = Clock::now();
                pinger.ping();
                during.push_back(svad::test::micros(Clock::now() - p0));
            }
        } catch (const sdbus::Error& e) {
            pingError = e.getName() + ": " + e.getMessage();
        }
    });
    std::vector<double> rescans;
    try {
        for (int r = 0; r < runs; ++r) {
            const auto r0 = Clock::now();
            s.client->rescan();
            rescans.push_back(ms(Clock::now() - r0));
        }
    } catch (const sdbus::Error& e) {
        done = true;
        t.join();
        fail("Rescan: " + e.getName() + ": " + e.getMessage());
    }
    done = true;
    t.join();
    if (!pingError.empty() || during.empty()) {
        fail("Ping during a rescan: " + (pingError.empty() ? "none answered" : pingError));
    }
    h.rescanMs = median(rescans);
    h.slowestPingUs = *std::max_element(during.begin(), during.end());
    h.pingsDuring = during.size();
}

HostFigures measureHost(Setup& s, uint32_t wanted, int runs, int calls) {
    svad::test::TempDir tree(scratchBase());
    const std::string root = tree.path() + "/host";
    const auto t0 = Clock::now();
    const auto spec = svad::hostgen::synthesize(wanted);
    svad::hostgen::writeTree(spec, root);
    HostFigures h;
    h.functions =
        static_cast<uint32_t>(svad::hostgen::statsOf(svad::hostgen::expandHost(spec)).functions);
    std::printf("host of %u PCI functions written in %.1f s under %s\n", h.functions,
                ms(Clock::now() - t0) / 1000, scratchBase().c_str());
    std::fflush(stdout);

    std::vector<double> starts;
    std::vector<double> rss;
    std::unique_ptr<Process> svad;
    for (int r = 0; r < runs; ++r) {
        if (svad) {
            stopSvad(s, svad);
        }
        double ready = 0;
        svad = startSvad(s, root, &ready);
        starts.push_back(ready);
        rss.push_back(static_cast<double>(svad::test::rssKiB(svad->pid())));
    }
    h.startMs = median(starts);
    h.rssKiB = median(rss);

    std::vector<double> listings;
    call("ListObjects", [&] { (void)s.client->listAll(); }); // warm-up
    for (int r = 0; r < runs; ++r) {
        call("ListObjects", [&] {
            const auto l0 = Clock::now();
            h.objects = s.client->listAll();
            listings.push_back(ms(Clock::now() - l0));
        });
    }
    h.listMs = median(listings);

    // A vfio-pci function that can be allocated (alone in a viable group).
    std::vector<sdbus::ObjectPath> vfio;
    call("ListDevices", [&] {
        vfio = s.client->devices({{"driver", sdbus::Variant(std::string("vfio-pci"))}});
    });
    std::string path;
    std::string address;
    for (size_t i = 0; i < vfio.size() && i < 64 && address.empty(); ++i) {
        std::string a;
        call("Get Address", [&] {
            a = s.client->proxy(vfio[i])
                    ->getProperty("Address")
                    .onInterface(kDevice)
                    .get<std::string>();
        });
        try {
            s.client->release(s.client->allocate("bench-host", a));
            path = vfio[i];
            address = a;
        } catch (const sdbus::Error&) {
            // not this one (a group shared with a function on another driver)
        }
    }
    if (address.empty()) {
        fail("no vfio-pci function of the host could be allocated: " + svad->log());
    }
    auto device = s.client->proxy(path);
    call("Get Driver", [&] {
        std::tie(h.getUs, h.getPingUs) = pairedMedians(
            calls, [&] { (void)device->getProperty("Driver").onInterface(kDevice); },
            [&] { s.client->ping(); });
    });
    call("AllocateContext/ReleaseContext", [&] {
        std::tie(h.allocUs, h.allocPingUs) = pairedMedians(
            calls, [&] { s.client->release(s.client->allocate("bench-host", address)); },
            [&] { s.client->ping(); });
    });
    measureRescan(s, runs, h);
    std::printf("  started %d times, listed %zu objects; Get and alloc on %s\n", runs, h.objects,
                address.c_str());
    std::fflush(stdout);
    stopSvad(s, svad);
    return h;
}

// A host of `count` vfio-pci functions, each alone in its IOMMU group with a
// VFIO cdev, as vfioHost makes them, but on as many buses and PCI domains as
// they need (32 functions a bus, buses 0x80-0xff, then the next domain).
svad::hostgen::HostSpec contextHost(uint32_t count) {
    auto h = svad::test::vfioHost("growth-contexts", count);
    for (uint32_t i = 0; i < count; ++i) {
        char addr[32];
        (void)std::snprintf(addr, sizeof addr, "%04x:%02x:%02x.0", i / 4096, 0x80 + (i / 32) % 128,
                            i % 32);
        h.devices[i].address = addr;
    }
    return h;
}

struct ContextFigures {
    uint32_t contexts = 0;
    double rssAboveKiB = 0;
    double allocTotalMs = 0;
    double listMs = 0;
    size_t objects = 0;
    double getUs = 0;
    double getPingUs = 0;
    double allocUs = 0;
    double allocPingUs = 0;
    int fds = 0;
};

std::vector<ContextFigures> measureContexts(Setup& s, const std::vector<uint32_t>& counts, int runs,
                                            int calls, ContextFigures* none) {
    svad::test::TempDir tree(scratchBase());
    const std::string root = tree.path() + "/host";
    const uint32_t functions = counts.back() + 1;
    const auto t0 = Clock::now();
    const auto spec = contextHost(functions);
    svad::hostgen::writeTree(spec, root);
    std::printf("host of %u vfio-pci functions (one group each) written in %.1f s\n", functions,
                ms(Clock::now() - t0) / 1000);
    std::fflush(stdout);

    double ready = 0;
    auto svad = startSvad(s, root, &ready);
    const std::string spare = spec.devices.back().address;
    // Warm-up, then the figures with none held.
    call("AllocateContext/ReleaseContext", [&] {
        for (int i = 0; i < 20; ++i) {
            s.client->release(s.client->allocate("bench-spare", spare));
        }
    });
    double rss0 = 0;
    {
        std::vector<double> listings;
        call("ListObjects", [&] { (void)s.client->listAll(); }); // warm-up
        for (int r = 0; r < runs; ++r) {
            call("ListObjects", [&] {
                const auto l0 = Clock::now();
                none->objects = s.client->listAll();
                listings.push_back(ms(Clock::now() - l0));
            });
        }
        none->listMs = median(listings);
        // After a listing, as at each count below (read before its own listing):
        // the buffers a listing leaves count alike.
        rss0 = static_cast<double>(svad::test::rssKiB(svad->pid()));
        none->fds = svad::test::fdCount(svad->pid());
    }

    std::vector<ContextFigures> out;
    std::vector<sdbus::ObjectPath> held;
    double allocMs = 0;
    // svad inherits this program's open-files limit: a count whose fds would pass
    // it is cut to what fits (with a margin), and is the last.
    struct rlimit rl {};
    (void)::getrlimit(RLIMIT_NOFILE, &rl);
    double fdsEach = 4; // a guess until the first count is held
    for (uint32_t n : counts) {
        const double room = (static_cast<double>(rl.rlim_cur) - none->fds - 256) / fdsEach;
        const bool cut = n > room;
        if (cut) {
            const auto fit = static_cast<uint32_t>(room / 100) * 100;
            std::printf("note: %u contexts need about %.0f open files in svad (%.0f each), over "
                        "its limit of %llu; counted up to %u instead\n",
                        n, none->fds + n * fdsEach, fdsEach,
                        static_cast<unsigned long long>(rl.rlim_cur), fit);
            if (fit <= held.size()) {
                break;
            }
            n = fit;
        }
        ContextFigures c;
        c.contexts = n;
        call("AllocateContext", [&] {
            const auto a0 = Clock::now();
            for (uint32_t i = static_cast<uint32_t>(held.size()); i < n; ++i) {
                held.push_back(
                    s.client->allocate("bench-ctx-" + std::to_string(i), spec.devices[i].address));
            }
            allocMs += ms(Clock::now() - a0);
        });
        c.allocTotalMs = allocMs;
        if (s.client->contextCount() != n) {
            fail("svad holds " + std::to_string(s.client->contextCount()) + " contexts, not " +
                 std::to_string(n));
        }
        c.rssAboveKiB = static_cast<double>(svad::test::rssKiB(svad->pid())) - rss0;
        c.fds = svad::test::fdCount(svad->pid());
        std::vector<double> listings;
        for (int r = 0; r < runs; ++r) {
            call("ListObjects", [&] {
                const auto l0 = Clock::now();
                c.objects = s.client->listAll();
                listings.push_back(ms(Clock::now() - l0));
            });
        }
        c.listMs = median(listings);
        auto context = s.client->proxy(held.front());
        call("Get Vm", [&] {
            std::tie(c.getUs, c.getPingUs) = pairedMedians(
                calls, [&] { (void)context->getProperty("Vm").onInterface(kContext); },
                [&] { s.client->ping(); });
        });
        call("AllocateContext/ReleaseContext", [&] {
            std::tie(c.allocUs, c.allocPingUs) = pairedMedians(
                calls, [&] { s.client->release(s.client->allocate("bench-spare", spare)); },
                [&] { s.client->ping(); });
        });
        std::printf("  %u contexts held: %zu objects listed, svad has %d fds open\n", n, c.objects,
                    c.fds);
        std::fflush(stdout);
        out.push_back(c);
        fdsEach = std::max(1.0, static_cast<double>(c.fds - none->fds) / n);
        if (cut) {
            break;
        }
    }
    stopSvad(s, svad);
    return out;
}

// svad keeps fds for each context it holds and inherits this limit: raised as
// far as it may be. Returns the soft limit.
rlim_t raiseFdLimit(rlim_t want) {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur >= want) {
        return rl.rlim_cur;
    }
    struct rlimit more = rl;
    more.rlim_cur = want;
    more.rlim_max = std::max(rl.rlim_max, want);
    if (::setrlimit(RLIMIT_NOFILE, &more) == 0) {
        return want;
    }
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

void run(const std::vector<uint32_t>& functions, const std::vector<uint32_t>& contexts, int runs,
         int calls);

} // namespace

int main(int argc, char** argv) {
    std::vector<uint32_t> functions = {1024, 4096, 16384};
    std::vector<uint32_t> contexts = {100, 1000, 10000};
    int runs = 3;
    int calls = 1000;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            functions = {1024, 4096};
            contexts = {100, 1000};
            continue;
        }
        if (i + 1 >= argc) {
            usage(a == "--functions" || a == "--contexts" || a == "--runs" || a == "--calls"
                      ? a + " needs a value"
                      : "unknown argument '" + a + "'");
        }
        const std::string v = argv[++i];
        if (a == "--functions") {
            functions = parseList(a, v);
        } else if (a == "--contexts") {
            contexts = parseList(a, v);
        } else if (a == "--runs" || a == "--calls") {
            const int n = std::atoi(v.c_str());
            if (n < 1 || n > 1000000) {
                usage(a + " needs a whole number from 1, not '" + v + "'");
            }
            (a == "--runs" ? runs : calls) = n;
        } else {
            usage("unknown argument '" + a + "'");
        }
    }
    if (!contexts.empty()) {
        // Each context keeps an iommufd, a device fd and a lease in svad.
        const rlim_t want = static_cast<rlim_t>(contexts.back()) * 4 + 4096;
        const rlim_t got = raiseFdLimit(want);
        if (got < want) {
            std::printf("note: open files limited to %llu (%llu wanted; raising the hard limit "
                        "needs CAP_SYS_RESOURCE)\n",
                        static_cast<unsigned long long>(got),
                        static_cast<unsigned long long>(want));
        }
    }

    try {
        run(functions, contexts, runs, calls);
    } catch (const std::exception& e) {
        (void)std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}

namespace {

void run(const std::vector<uint32_t>& functions, const std::vector<uint32_t>& contexts, int runs,
         int calls) {
    svad::test::TempDir dir;
    const std::string config = dir.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                          << "default_policy: deny\n"
                          << "rules:\n  - name: bench\n    match: {kind: pci}\n"
                          << "    allow: {vms: [\"bench-*\"]}\n";
    svad::test::PrivateBus bus(dir.path(), svad::test::systemBusConfig(dir, false));
    Client client(bus.address());
    Setup s{dir.path(), bus.address(), config, &client};
    std::printf("svad (sim backend) on a private system-type bus; %d starts and listings, "
                "%d calls a per-call figure\n",
                runs, calls);
    std::fflush(stdout);

    std::vector<HostFigures> hosts;
    for (uint32_t f : functions) {
        hosts.push_back(measureHost(s, f, runs, calls));
    }
    ContextFigures none;
    std::vector<ContextFigures> held;
    if (!contexts.empty()) {
        held = measureContexts(s, contexts, runs, calls, &none);
    }
    if (!hosts.empty()) {
        std::printf("\n== host size (PCI functions) ==\n");
        std::vector<Row> start;
        std::vector<Row> rss;
        std::vector<Row> list;
        std::vector<Row> get;
        std::vector<Row> alloc;
        for (const auto& h : hosts) {
            const double f = h.functions;
            start.push_back({h.functions, h.startMs, h.startMs * 1000 / f});
            rss.push_back({h.functions, h.rssKiB / 1024, h.rssKiB / f});
            list.push_back({h.functions, h.listMs, h.listMs * 1000 / f});
            get.push_back({h.functions, h.getUs, h.getUs, h.getPingUs});
            alloc.push_back({h.functions, h.allocUs, h.allocUs, h.allocPingUs});
        }
        printSlope("cold start, exec to name owned", "functions", "ms", 1000, "us/function", start);
        printSlope("RSS when ready", "functions", "MiB", 1024, "KiB/function", rss);
        printSlope("full listing (ListObjects pages)", "functions", "ms", 1000, "us/function",
                   list);
        std::printf("  (objects listed:");
        for (const auto& h : hosts) {
            std::printf(" %zu", h.objects);
        }
        std::printf(")\n");
        printFlat("Properties.Get of a device's Driver", "functions", get);
        printFlat("AllocateContext+ReleaseContext, one vfio-pci function", "functions", alloc);
        std::printf("\nRescan (median of %d), and the slowest Ping another client got meanwhile\n"
                    "  (the loop's longest turn: it should not grow with the host)\n",
                    runs);
        std::printf("  %10s %12s %16s %14s %10s %8s\n", "functions", "rescan ms", "us/function",
                    "slowest Ping", "x Ping", "pings");
        for (const auto& h : hosts) {
            std::printf("  %10u %12.1f %16.3f %12.1f us %9.1fx %8zu\n", h.functions, h.rescanMs,
                        h.rescanMs * 1000 / h.functions, h.slowestPingUs,
                        h.slowestPingUs / h.getPingUs, h.pingsDuring);
        }
    }
    if (!held.empty()) {
        std::printf("\n== contexts held (host of %u vfio-pci functions) ==\n", contexts.back() + 1);
        std::printf("with none held: listing %.1f ms (%zu objects), svad has %d fds open\n",
                    none.listMs, none.objects, none.fds);
        std::vector<Row> rss;
        std::vector<Row> alloc;
        std::vector<Row> list;
        std::vector<Row> get;
        std::vector<Row> pair;
        std::vector<Row> fds;
        for (const auto& c : held) {
            const double n = c.contexts;
            rss.push_back({c.contexts, c.rssAboveKiB, c.rssAboveKiB / n});
            alloc.push_back({c.contexts, c.allocTotalMs, c.allocTotalMs * 1000 / n});
            list.push_back(
                {c.contexts, c.listMs, c.listMs * 1000 / static_cast<double>(c.objects)});
            get.push_back({c.contexts, c.getUs, c.getUs, c.getPingUs});
            pair.push_back({c.contexts, c.allocUs, c.allocUs, c.allocPingUs});
            fds.push_back({c.contexts, static_cast<double>(c.fds - none.fds),
                           static_cast<double>(c.fds - none.fds) / n});
        }
        printSlope("RSS above none held (malloc moves it by a few MiB either way)", "contexts",
                   "KiB", 1, "KiB/context", rss);
        printSlope("allocating them, one after the other", "contexts", "ms", 1000, "us/context",
                   alloc);
        printSlope("full listing, per object listed", "contexts", "ms", 0, "us/object", list,
                   false);
        printFlat("Properties.Get of a context's Vm", "contexts", get);
        printFlat("AllocateContext+ReleaseContext of a spare function, N held", "contexts", pair);
        printSlope("svad's open fds above none held", "contexts", "fds", 1, "fds/context", fds);
    }
}

} // namespace
