// Cold start of svad on a synthesized host, against lspci reading the same
// tree, in the same run.
//
//   svad_bench_cold_start [--functions N] [--runs R]
//
// svad's time runs from exec until its name is owned on the bus (it takes
// the name only after every object is registered); lspci's is a whole
// `lspci -A linux-sysfs -O sysfs.path=TREE/bus/pci -vvv` run. Both are the
// median of R runs. svad runs with a configuration of its own (deny all) and
// metrics served on a free port, as a host runs it; discovery alone is timed
// with as many readers as svad uses. Also printed: svad's resident memory
// once ready, a client's GetManagedObjects of the whole host, and
// `svactl devices` (the table of every function) against lspci.
#include "fixture.h"
#include "svad/core/discovery.h"
#include "svad/linux/sysfs_reader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using svad::test::Process;

double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

long statusKb(pid_t pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key + ":", 0) == 0) {
            return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
        }
    }
    return -1;
}

bool nameOwned(sdbus::IProxy& dbus) {
    bool has = false;
    dbus.callMethod("NameHasOwner")
        .onInterface("org.freedesktop.DBus")
        .withArguments(std::string("org.svad.Svad1"))
        .storeResultsTo(has);
    return has;
}

} // namespace

int main(int argc, char** argv) {
    uint32_t functions = 4096;
    int runs = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--functions") {
            functions = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
        } else if (a == "--runs") {
            runs = std::max(1, std::atoi(argv[i + 1]));
        }
    }

    // The tree lives in memory (/dev/shm) when it can, so that both programs
    // are measured on CPU and syscalls, not on the disk.
    if (::access("/dev/shm", W_OK) == 0 && std::getenv("TMPDIR") == nullptr) {
        ::setenv("TMPDIR", "/dev/shm", 1);
    }
    svad::test::TempDir dir;
    const std::string root = dir.path() + "/host";
    auto t0 = Clock::now();
    svad::hostgen::writeTree(svad::hostgen::synthesize(functions), root);
    std::printf("host: %u PCI functions synthesized in %.1f ms (%s)\n", functions,
                ms(Clock::now() - t0), root.c_str());

    // Baseline: lspci on the same tree.
    std::vector<double> lspci;
    for (int r = 0; r < runs; ++r) {
        auto s = Clock::now();
        Process p(
            {"lspci", "-A", "linux-sysfs", "-O", "sysfs.path=" + root + "/sys/bus/pci", "-vvv"},
            "/dev/null");
        int st = p.wait(120000);
        if (st != 0) {
            (void)std::fprintf(stderr, "lspci failed (status %d)\n", st);
            return 1;
        }
        lspci.push_back(ms(Clock::now() - s));
    }

    // In-process discovery alone, for reference: with as many readers as svad
    // uses (one per core, up to four).
    const unsigned readers = std::clamp(std::thread::hardware_concurrency(), 1U, 4U);
    std::vector<double> discovery;
    for (int r = 0; r < runs; ++r) {
        auto s = Clock::now();
        auto host = svad::core::discover(
            [&root] { return std::make_unique<svad::linux_impl::SysfsReader>(root + "/sys"); },
            readers);
        discovery.push_back(ms(Clock::now() - s));
        if (host.devices.size() != functions) {
            (void)std::fprintf(stderr, "discovery found %zu functions, expected %u\n",
                               host.devices.size(), functions);
            return 1;
        }
    }

    // svad as a host runs it, but with its own configuration (not one of this
    // machine's) and metrics on a port of its own.
    const std::string config = dir.path() + "/svad.yaml";
    std::ofstream(config) << "default_policy: deny\n";
    const std::string metrics = "127.0.0.1:" + std::to_string(svad::test::freePort());
    svad::test::PrivateBus bus(dir.path());
    auto client = sdbus::createSessionBusConnectionWithAddress(bus.address());
    auto dbus =
        svad::dbus::compat::makeProxy(*client, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    std::vector<double> svad;
    std::vector<double> managed;
    std::vector<double> listing;
    long rssKb = 0;
    long hwmKb = 0;
    size_t objects = 0;
    for (int r = 0; r < runs; ++r) {
        auto s = Clock::now();
        Process p({SVAD_BINARY, "--bus", bus.address(), "--backend", "sim", "--sysfs-root",
                   root + "/sys", "--dev-root", root + "/dev", "--config", config,
                   "--metrics-address", metrics},
                  dir.path() + "/svad.log");
        while (!nameOwned(*dbus)) {
            if (!p.running()) {
                (void)std::fprintf(stderr, "svad exited: %s\n", p.log().c_str());
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        svad.push_back(ms(Clock::now() - s));
        rssKb = statusKb(p.pid(), "VmRSS");
        hwmKb = statusKb(p.pid(), "VmHWM");

        auto root = svad::dbus::compat::makeProxy(*client, "org.svad.Svad1", "/org/svad/Svad1");
        std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>
            all;
        auto m = Clock::now();
        root->callMethod("GetManagedObjects")
            .onInterface("org.freedesktop.DBus.ObjectManager")
            .storeResultsTo(all);
        managed.push_back(ms(Clock::now() - m));
        objects = all.size();

        // What an administrator runs: the table of every PCI function.
        auto l = Clock::now();
        Process ls({SVACTL_BINARY, "--bus", bus.address(), "devices"}, "/dev/null");
        if (int st = ls.wait(120000); st != 0) {
            (void)std::fprintf(stderr, "svactl devices failed (status %d)\n", st);
            return 1;
        }
        listing.push_back(ms(Clock::now() - l));

        p.signal(SIGTERM);
        p.wait(10000);
        // Wait for the name to go, so the next run starts from nothing.
        while (nameOwned(*dbus)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    const double l = median(lspci);
    const double s = median(svad);
    std::printf("lspci -vvv on the tree:          %8.1f ms (median of %d)\n", l, runs);
    std::printf("svad cold start to name owned:   %8.1f ms (median of %d)\n", s, runs);
    std::printf("  of which discovery alone:      %8.1f ms (%u readers, as svad)\n",
                median(discovery), readers);
    std::printf("svad RSS when ready:             %8.1f MiB (peak %.1f MiB)\n", rssKb / 1024.0,
                hwmKb / 1024.0);
    std::printf("GetManagedObjects (%zu objects): %8.1f ms (into sdbus-c++ variants)\n", objects,
                median(managed));
    std::printf("svactl devices:                  %8.1f ms\n", median(listing));
    std::printf("ratio svad / lspci:              %8.2f (target <= 0.25)\n", s / l);
    std::printf("ratio svactl devices / lspci:    %8.2f (target <= 0.25)\n", median(listing) / l);
    return 0;
}
