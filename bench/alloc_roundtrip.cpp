// Context allocation round trips against a no-op call on the same bus, in
// the same run: a private dbus-daemon, the real svad (sim backend) on a
// generated host of vfio-pci functions, one IOMMU group each.
//
//   svad_bench_alloc_roundtrip [--n N] [--warmup W] [--clients C] [--per-client M]
//                              [--state-dir DIR] [--bus ADDRESS --device ID]
//
// --state-dir: svad records its contexts in DIR/state.db, as it does with the
// linux backend (in /var/lib/svad unless told otherwise); without it the sim
// backend keeps no state. Put DIR on the file system whose cost is wanted
// (/dev/shm is memory; the state directory of a host is on its disk).
// --bus and --device: an svad already running on that bus (the kernel tier's,
// with the linux backend on a real kernel), and the one device it gives the
// caller; the latency, fresh-connection and message-count rounds run on it,
// the throughput rounds (a device per client) do not.
//
// Latency: N iterations (after W of warm-up), each a Peer.Ping to svad (which
// sd-bus answers itself: the cost of the bus), an AllocateContext of one
// device and its ReleaseContext; p50/p99 of each and the ratios to Ping.
// The same with a fresh connection for each round (connect, the calls,
// disconnect), so that svad's lookup of a new caller's credentials counts.
// Throughput: alloc+release round trips per second with 1 client and with C
// clients at once, each a thread with its own connection and its own device.
// The bus's share: a monitor on the bus counts the messages it routes for one
// Ping pair and for one allocate+release (calls, replies, the signals svad's
// interface promises), and the Ping pair's cost per message times that count
// estimates what the round trip costs the bus alone (a signal, which no one
// answers, costs less than a call: the estimate is high); svad's part is what
// is above it.
#include "fixture.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <string>
#include <systemd/sd-bus.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using svad::test::Percentiles;
using svad::test::percentiles;

using Clock = std::chrono::steady_clock;
using svad::test::Process;

constexpr const char* kService = "org.svad.Svad1";
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

// A client of its own: a connection and a proxy of svad's root object.
class Client {
public:
    explicit Client(const std::string& bus) {
        // dbus-daemon creates its socket a moment before it listens.
        for (int attempt = 1;; ++attempt) {
            try {
                connection_ = sdbus::createSessionBusConnectionWithAddress(bus);
                break;
            } catch (const sdbus::Error& e) {
                if (attempt == 50) {
                    throw;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        root_ = svad::dbus::compat::makeProxy(*connection_, kService, kRoot);
    }

    void ping() { root_->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer"); }

    sdbus::ObjectPath allocate(const std::string& vm, const std::string& device) {
        sdbus::ObjectPath context;
        sdbus::UnixFd iommufd;
        std::map<std::string, sdbus::UnixFd> fds;
        std::map<std::string, sdbus::Variant> info;
        root_->callMethod("AllocateContext")
            .onInterface(kManager)
            .withArguments(vm, std::vector<std::string>{device},
                           std::map<std::string, sdbus::Variant>{})
            .storeResultsTo(context, iommufd, fds, info);
        if (!iommufd.isValid() || fds.count(device) == 0) {
            throw std::runtime_error("AllocateContext gave no fds for " + device);
        }
        return context; // the fds close here, as a VMM that is done with them would
    }

    void release(const sdbus::ObjectPath& context) {
        root_->callMethod("ReleaseContext").onInterface(kManager).withArguments(context);
    }

    uint32_t contextCount() {
        return root_->getProperty("ContextCount").onInterface(kManager).get<uint32_t>();
    }

    bool nameOwned() {
        auto dbus = svad::dbus::compat::makeProxy(*connection_, "org.freedesktop.DBus",
                                                  "/org/freedesktop/DBus");
        bool has = false;
        dbus->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string(kService))
            .storeResultsTo(has);
        return has;
    }

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IProxy> root_;
};

// A monitor connection (org.freedesktop.DBus.Monitoring.BecomeMonitor): counts
// every message the bus routes, on a thread of its own.
class BusMonitor {
public:
    explicit BusMonitor(const std::string& address) {
        auto check = [](int r, const char* what) {
            if (r < 0) {
                throw std::runtime_error(std::string("bus monitor: ") + what + ": " +
                                         std::strerror(-r));
            }
        };
        check(sd_bus_new(&bus_), "sd_bus_new");
        try {
            check(sd_bus_set_address(bus_, address.c_str()), "address");
            check(sd_bus_set_monitor(bus_, 1), "monitor mode");
            check(sd_bus_set_bus_client(bus_, 1), "bus client");
            check(sd_bus_start(bus_), "connect");
            sd_bus_error error = SD_BUS_ERROR_NULL;
            const int r = sd_bus_call_method(bus_, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus.Monitoring", "BecomeMonitor",
                                             &error, nullptr, "asu", 0, 0U);
            const std::string why = error.message != nullptr ? error.message : "";
            sd_bus_error_free(&error);
            check(r, ("BecomeMonitor " + why).c_str());
        } catch (...) {
            sd_bus_unref(bus_); // no destructor runs for a constructor that threw
            throw;
        }
        thread_ = std::thread([this] { run(); });
    }
    ~BusMonitor() {
        stop_ = true;
        thread_.join();
        sd_bus_flush_close_unref(bus_);
    }
    BusMonitor(const BusMonitor&) = delete;
    BusMonitor& operator=(const BusMonitor&) = delete;

    // The count once no message has come for 200 ms.
    uint64_t settled() {
        uint64_t last = count_.load();
        for (;;) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            const uint64_t now = count_.load();
            if (now == last) {
                return now;
            }
            last = now;
        }
    }

private:
    void run() {
        while (!stop_.load()) {
            sd_bus_message* m = nullptr;
            const int r = sd_bus_process(bus_, &m);
            if (r < 0) {
                return;
            }
            if (m != nullptr) {
                ++count_;
                sd_bus_message_unref(m);
            }
            if (r == 0) {
                (void)sd_bus_wait(bus_, 20000);
            }
        }
    }

    sd_bus* bus_ = nullptr;
    std::atomic<uint64_t> count_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Round trips per second of `op` run `perClient` times on each of `clients` threads.
template <typename Op>
double throughput(const std::string& bus, const std::vector<std::string>& devices, int clients,
                  int perClient, Op op) {
    std::vector<std::unique_ptr<Client>> conns;
    conns.reserve(static_cast<size_t>(clients));
    for (int c = 0; c < clients; ++c) {
        conns.push_back(std::make_unique<Client>(bus));
    }
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<bool> failed{false};
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(clients));
    for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            ++ready;
            while (!go.load()) {
                std::this_thread::yield();
            }
            try {
                for (int i = 0; i < perClient; ++i) {
                    op(*conns[c], "bench-" + std::to_string(c), devices[c]);
                }
            } catch (const std::exception& e) {
                (void)std::fprintf(stderr, "client %d: %s\n", c, e.what());
                failed = true;
            }
        });
    }
    while (ready.load() < clients) {
        std::this_thread::yield();
    }
    auto start = Clock::now();
    go = true;
    for (auto& t : threads) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (failed) {
        std::exit(1);
    }
    return clients * perClient / seconds;
}

// 1 client and `clients` at once, each on its own device: allocate+release and Ping.
void throughputRounds(const std::string& bus, const std::vector<std::string>& devices, int clients,
                      int perClient) {
    auto allocRelease = [](Client& c, const std::string& vm, const std::string& dev) {
        c.release(c.allocate(vm, dev));
    };
    auto pingOnly = [](Client& c, const std::string&, const std::string&) { c.ping(); };
    throughput(bus, devices, clients, std::max(1, perClient / 10), allocRelease);
    const double t1 = throughput(bus, devices, 1, perClient * 4, allocRelease);
    const double tn = throughput(bus, devices, clients, perClient, allocRelease);
    const double p1 = throughput(bus, devices, 1, perClient * 4, pingOnly);
    const double pn = throughput(bus, devices, clients, perClient, pingOnly);
    std::printf("\nthroughput                                  alloc+release/s     Ping/s\n");
    std::printf("  1 client  (%5d round trips)            %12.0f  %12.0f\n", perClient * 4, t1, p1);
    std::printf("  %2d clients (%5d round trips, own device)%12.0f  %12.0f\n", clients,
                clients * perClient, tn, pn);
    std::printf("  scaling 1 -> %d clients:                  %11.2fx  %11.2fx\n", clients, tn / t1,
                pn / p1);
}

} // namespace

int main(int argc, char** argv) {
    int n = 2000;
    int warmup = 200;
    int clients = 16;
    int perClient = 500;
    // The one option that is not a number; the rest go to parseIntOptions.
    std::string stateDir;
    std::string externalBus;
    std::string externalDevice;
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
        std::string* text = std::strcmp(argv[i], "--state-dir") == 0 ? &stateDir
                            : std::strcmp(argv[i], "--bus") == 0     ? &externalBus
                            : std::strcmp(argv[i], "--device") == 0  ? &externalDevice
                                                                     : nullptr;
        if (text != nullptr && i + 1 < argc) {
            *text = argv[++i];
        } else {
            args.push_back(argv[i]);
        }
    }
    if (externalBus.empty() != externalDevice.empty() ||
        (!externalBus.empty() && !stateDir.empty())) {
        (void)std::fprintf(stderr, "--bus and --device go together, and without --state-dir\n");
        return 2;
    }
    const bool external = !externalBus.empty();
    argc = static_cast<int>(args.size());
    argv = args.data();
    svad::test::parseIntOptions(argc, argv,
                                {{"--n", &n, 1},
                                 {"--warmup", &warmup, 0},
                                 {"--clients", &clients, 1},
                                 {"--per-client", &perClient, 1}});

    if (::access("/dev/shm", W_OK) == 0 && std::getenv("TMPDIR") == nullptr) {
        ::setenv("TMPDIR", "/dev/shm", 1);
    }
    std::optional<svad::test::TempDir> dir;
    std::optional<svad::test::PrivateBus> privateBus;
    std::optional<Process> svad;
    std::string address = externalBus;
    std::vector<std::string> devices{externalDevice};
    if (!external) {
        dir.emplace();
        const std::string root = dir->path() + "/host";
        const uint32_t functions = static_cast<uint32_t>(std::max(clients, 1) + 1);
        auto host = svad::test::vfioHost("alloc-bench", functions);
        svad::hostgen::writeTree(host, root);
        devices.clear();
        for (const auto& d : host.devices) {
            devices.push_back(d.address);
        }
        // svad's own plugins, and a rule that gives the bench's VMs the functions: the
        // round trip includes the policy decision, as on a real host.
        const std::string config = dir->path() + "/svad.yaml";
        std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                              << "default_policy: deny\n"
                              << "rules:\n  - name: bench\n    match: {kind: pci}\n"
                              << "    allow: {vms: [\"bench-*\"]}\n";
        privateBus.emplace(dir->path());
        address = privateBus->address();
        std::vector<std::string> svadArgs{
            SVAD_BINARY,   "--bus",       address,       "--backend", "sim",  "--sysfs-root",
            root + "/sys", "--dev-root",  root + "/dev", "--config",  config, "--metrics-address",
            "off",         "--state-dir", "off"};
        if (!stateDir.empty()) {
            svadArgs.back() = stateDir;
        }
        svad.emplace(svadArgs, dir->path() + "/svad.log");
    }
    auto svadLog = [&svad] { return svad ? svad->log() : std::string(); };
    Client client(address);
    while (!client.nameOwned()) {
        if (!svad || !svad->running()) {
            (void)std::fprintf(stderr, "no svad on the bus: %s\n", svadLog().c_str());
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const uint32_t heldBefore = client.contextCount();
    if (external) {
        std::printf("svad on %s (already running), device %s\n", address.c_str(),
                    externalDevice.c_str());
    } else {
        std::printf("host: %zu vfio-pci functions, one IOMMU group each; svad pid %d, sim "
                    "backend; state: %s\n",
                    devices.size(), svad->pid(),
                    stateDir.empty() ? "none" : (stateDir + "/state.db").c_str());
    }

    // Latency: the three calls interleaved, so that drift hits them alike.
    const std::string& device = devices.back(); // not one of the throughput clients'
    std::vector<double> ping;
    std::vector<double> alloc;
    std::vector<double> release;
    std::vector<double> pair;
    std::vector<double> pingPair;
    try {
        for (int i = 0; i < warmup + n; ++i) {
            auto t0 = Clock::now();
            client.ping();
            auto t1 = Clock::now();
            client.ping();
            auto t2 = Clock::now();
            auto context = client.allocate("bench-latency", device);
            auto t3 = Clock::now();
            client.release(context);
            auto t4 = Clock::now();
            if (i >= warmup) {
                ping.push_back(svad::test::micros(t1 - t0));
                pingPair.push_back(svad::test::micros(t2 - t0));
                alloc.push_back(svad::test::micros(t3 - t2));
                release.push_back(svad::test::micros(t4 - t3));
                pair.push_back(svad::test::micros(t4 - t2));
            }
        }
    } catch (const sdbus::Error& e) {
        (void)std::fprintf(stderr, "%s: %s\n%s", e.getName().c_str(), e.getMessage().c_str(),
                           svadLog().c_str());
        return 1;
    }

    const auto p = percentiles(ping);
    const auto pp = percentiles(pingPair);
    const auto a = percentiles(alloc);
    const auto r = percentiles(release);
    const auto ar = percentiles(pair);
    std::printf("\nlatency, N=%d after %d warm-up (us)           p50       p99   p50/no-op  "
                "p99/no-op\n",
                n, warmup);
    auto row = [](const char* what, Percentiles x, Percentiles base) {
        std::printf("  %-40s %8.1f  %8.1f  %8.2fx  %8.2fx\n", what, x.p50, x.p99, x.p50 / base.p50,
                    x.p99 / base.p99);
    };
    std::printf("  %-40s %8.1f  %8.1f\n", "Peer.Ping (no-op, answered by sd-bus)", p.p50, p.p99);
    row("AllocateContext (1 vfio device)", a, p);
    row("ReleaseContext", r, p);
    row("AllocateContext+ReleaseContext", ar, p);
    row("  the same, against two Pings", ar, pp);

    // A fresh connection for each round: its Hello, svad's lookup of who the caller is,
    // and its disconnect count (against a fresh connection and two Pings).
    const int fresh = std::max(1, n / 10);
    std::vector<double> freshPing;
    std::vector<double> freshPair;
    for (int i = 0; i < fresh; ++i) {
        auto t0 = Clock::now();
        {
            Client c(address);
            c.ping();
            c.ping();
        }
        auto t1 = Clock::now();
        {
            Client c(address);
            c.release(c.allocate("bench-fresh", device));
        }
        auto t2 = Clock::now();
        freshPing.push_back(svad::test::micros(t1 - t0));
        freshPair.push_back(svad::test::micros(t2 - t1));
    }
    const auto fp = percentiles(freshPing);
    const auto fa = percentiles(freshPair);
    std::printf(
        "\nfresh connection each round, N=%d (us)      p50       p99   p50/base   p99/base\n",
        fresh);
    std::printf("  %-40s %8.1f  %8.1f\n", "connect, two Pings, disconnect", fp.p50, fp.p99);
    row("connect, allocate+release, disconnect", fa, fp);

    // What the bus routes for each: the Ping pair's cost per message times the count
    // estimates the bus's share of the round trip.
    double msgPing = 0;
    double msgPair = 0;
    {
        BusMonitor monitor(address);
        constexpr int kCounted = 50;
        const uint64_t before = monitor.settled();
        for (int i = 0; i < kCounted; ++i) {
            client.ping();
            client.ping();
        }
        const uint64_t afterPing = monitor.settled();
        for (int i = 0; i < kCounted; ++i) {
            client.release(client.allocate("bench-latency", device));
        }
        const uint64_t afterPair = monitor.settled();
        msgPing = static_cast<double>(afterPing - before) / kCounted;
        msgPair = static_cast<double>(afterPair - afterPing) / kCounted;
    }
    const double floor = pp.p50 / msgPing * msgPair;
    std::printf("\nbus messages per round (a monitor's count)     Ping pair %.1f, "
                "allocate+release %.1f\n",
                msgPing, msgPair);
    std::printf("  the bus's share of allocate+release, estimated: %.1f us (%.2fx two Pings); "
                "svad's round trip %.2fx that\n",
                floor, floor / pp.p50, ar.p50 / floor);

    if (external) {
        std::printf("\nthroughput: not measured (it takes a device per client)\n");
    } else {
        throughputRounds(address, devices, clients, perClient);
    }

    const uint32_t left = client.contextCount() - heldBefore;
    const bool met = a.p50 <= 1.5 * p.p50 && a.p99 <= 2.0 * p.p99 && r.p50 <= 1.5 * p.p50 &&
                     r.p99 <= 2.0 * p.p99;
    std::printf("\ntarget per call (p50 <= 1.5x, p99 <= 2x the no-op): %s\n",
                met ? "met" : "missed");
    std::printf("contexts left: %u\n", left);
    if (svad) {
        svad->signal(SIGTERM);
        svad->wait(10000);
    }
    return left == 0 ? 0 : 1;
}
