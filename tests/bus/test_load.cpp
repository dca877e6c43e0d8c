// A bounded load: 16 clients, each on a connection and devices of its own,
// for 60 s (SVAD_LOAD_SECONDS to change it), mixing AllocateContext,
// AllocatePasid, SetVirtualId, ReleasePasid and ReleaseContext. A checker
// reads every context svad holds, twice a second, and the invariants must
// hold each time: no device in two contexts, no PASID twice, every context's
// owner alive. svad's RSS and fd count after a warm-up and at the end are
// printed and must be flat; so is the throughput ("[ measured ]").
#include "fixture.h"
#include "svad/dbus/sdbus_compat.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContext = "org.svad.Svad1.Context";
constexpr int kClients = 16;
constexpr uint32_t kDevicesPerClient = 2;

using Objects =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

int loadSeconds() {
    const char* s = std::getenv("SVAD_LOAD_SECONDS");
    const int n = s != nullptr ? std::atoi(s) : 60;
    return n > 0 ? n : 60;
}

// What svad's fds are, one "fd -> target" a line.
std::string fdTargets(pid_t pid) {
    std::string out;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
        out += e.path().filename().string() + " -> " +
               std::filesystem::read_symlink(e.path(), ec).string() + "\n";
    }
    return out;
}

// Every context object with the properties the invariants need.
Objects contexts(sdbus::IProxy& proxy) {
    Objects out;
    std::string start = "/org/svad/Svad1/context/";
    for (;;) {
        Objects page;
        std::string next;
        proxy.callMethod("ListObjects")
            .onInterface(kManager)
            .withArguments(start, uint32_t{0})
            .storeResultsTo(page, next);
        for (auto& [path, ifaces] : page) {
            if (std::string(path).rfind("/org/svad/Svad1/context/", 0) == 0) {
                out.emplace(path, std::move(ifaces));
            }
        }
        if (next.empty() || next.rfind("/org/svad/Svad1/context/", 0) != 0) {
            return out;
        }
        start = next;
    }
}

struct Counts {
    std::atomic<uint64_t> allocs{0};
    std::atomic<uint64_t> pasids{0};
    std::atomic<uint64_t> virtIds{0};
    std::atomic<uint64_t> releases{0};
    std::atomic<uint64_t> errors{0};
};

TEST(Load, SixteenClientsForAMinuteKeepEveryInvariantAndSvadStaysFlat) {
    const int seconds = loadSeconds();
    SvadFixture f(vfioHost("load", kClients * kDevicesPerClient));
    const pid_t svad = f.svad().pid();
    std::vector<std::string> addresses;
    for (uint32_t i = 0; i < kClients * kDevicesPerClient; ++i) {
        char addr[32];
        (void)std::snprintf(addr, sizeof addr, "0000:%02x:%02x.0", 0x81 + i / 32, i % 32);
        addresses.emplace_back(addr);
    }
    {
        // One round first: what svad sets up on first use (threads, their
        // eventfds) belongs to the idle figure.
        auto proxy = f.proxy(kRoot);
        Allocated a = allocateContext(*proxy, "warm-up", {addresses[0], addresses[1]});
        uint32_t pasid = 0;
        proxy->callMethod("AllocatePasid")
            .onInterface(kManager)
            .withArguments(a.path, addresses[0], std::map<std::string, sdbus::Variant>{})
            .storeResultsTo(pasid);
        proxy->callMethod("SetVirtualId")
            .onInterface(kManager)
            .withArguments(a.path, addresses[0], uint64_t{1});
        proxy->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
    }
    const int fdsIdle = fdCount(svad); // nothing held
    const std::string fdsIdleTargets = fdTargets(svad);
    Counts counts;
    std::mutex failuresMutex;
    std::vector<std::string> failures; // the first few, for the report
    auto failed = [&](const std::string& what) {
        ++counts.errors;
        std::lock_guard lock(failuresMutex);
        if (failures.size() < 10) {
            failures.push_back(what);
        }
    };
    std::atomic<bool> stop{false};
    const auto started = Clock::now();
    const auto deadline = started + std::chrono::seconds(seconds);

    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
        clients.emplace_back([&, c] {
            auto conn = sdbus::createSessionBusConnectionWithAddress(f.bus());
            auto proxy = svad::dbus::compat::makeProxy(*conn, "org.svad.Svad1", kRoot);
            std::mt19937 rng(static_cast<uint32_t>(c) + 1);
            const std::string vm = "load-" + std::to_string(c);
            const std::vector<std::string> mine = {addresses[c * kDevicesPerClient],
                                                   addresses[c * kDevicesPerClient + 1]};
            while (!stop.load() && Clock::now() < deadline) {
                std::vector<std::string> devices = {mine[0]};
                if (rng() % 2 == 0) {
                    devices.push_back(mine[1]);
                }
                Allocated a;
                try {
                    a = allocateContext(*proxy, vm, devices);
                    ++counts.allocs;
                } catch (const sdbus::Error& e) {
                    failed("allocate " + vm + ": " + e.getMessage());
                    continue;
                }
                std::vector<uint32_t> got;
                const int n = 1 + static_cast<int>(rng() % 4);
                for (int i = 0; i < n; ++i) {
                    try {
                        uint32_t pasid = 0;
                        proxy->callMethod("AllocatePasid")
                            .onInterface(kManager)
                            .withArguments(a.path, devices[i % devices.size()],
                                           std::map<std::string, sdbus::Variant>{})
                            .storeResultsTo(pasid);
                        got.push_back(pasid);
                        ++counts.pasids;
                    } catch (const sdbus::Error& e) {
                        failed("AllocatePasid " + vm + ": " + e.getMessage());
                    }
                }
                try {
                    proxy->callMethod("SetVirtualId")
                        .onInterface(kManager)
                        .withArguments(a.path, devices[0], uint64_t{0x100} + (rng() % 64));
                    ++counts.virtIds;
                    if (!got.empty()) {
                        proxy->callMethod("ReleasePasid")
                            .onInterface(kManager)
                            .withArguments(a.path, got.back());
                    }
                    proxy->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
                    ++counts.releases;
                } catch (const sdbus::Error& e) {
                    failed("SetVirtualId/ReleasePasid/ReleaseContext " + vm + ": " +
                           e.getMessage());
                }
            }
        });
    }

    // The checker, and the warm-up figures after 5 s (or a tenth of a short run).
    size_t checks = 0;
    size_t violations = 0;
    std::string firstViolation;
    auto violation = [&](const std::string& what) {
        if (violations++ == 0) {
            firstViolation = what;
        }
    };
    long rssStart = -1;
    int fdsStart = 0; // under load, for the report
    const auto warmUp = started + std::chrono::milliseconds(std::min(5000, seconds * 100));
    auto checkerConn = sdbus::createSessionBusConnectionWithAddress(f.bus());
    auto checker = svad::dbus::compat::makeProxy(*checkerConn, "org.svad.Svad1", kRoot);
    while (Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (rssStart < 0 && Clock::now() >= warmUp) {
            rssStart = rssKiB(svad);
            fdsStart = fdCount(svad);
        }
        Objects seen;
        try {
            seen = contexts(*checker);
        } catch (const sdbus::Error& e) {
            violation(std::string("svad did not answer ListObjects: ") + e.getMessage());
            continue;
        }
        ++checks;
        std::map<std::string, std::string> deviceHolder;
        std::map<uint32_t, std::string> pasidHolder;
        for (const auto& [path, ifaces] : seen) {
            auto it = ifaces.find(kContext);
            if (it == ifaces.end()) {
                continue;
            }
            const auto& p = it->second;
            for (const auto& d : p.at("Devices").get<std::vector<std::string>>()) {
                auto [held, fresh] = deviceHolder.emplace(d, path);
                if (!fresh) {
                    violation(d + " is in " + held->second + " and " + std::string(path));
                }
            }
            for (const auto& entry :
                 p.at("Pasids").get<std::vector<sdbus::Struct<uint32_t, std::string>>>()) {
                const uint32_t pasid = entry.get<0>();
                auto [held, fresh] = pasidHolder.emplace(pasid, path);
                if (!fresh) {
                    violation("PASID " + std::to_string(pasid) + " is in " + held->second +
                              " and " + std::string(path));
                }
            }
            const auto owner = static_cast<pid_t>(p.at("OwnerPid").get<uint32_t>());
            if (owner <= 0 || ::kill(owner, 0) != 0) {
                violation(std::string(path) + "'s owner " + std::to_string(owner) +
                          " is not alive");
            }
        }
    }
    stop = true;
    for (auto& t : clients) {
        t.join();
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    // Every client released what it took: nothing is left, and svad is as it was.
    EXPECT_TRUE(waitUntil(
        [&f] { return f.property(kRoot, kManager, "ContextCount").get<uint32_t>() == 0; }));
    const long rssEnd = rssKiB(svad);
    const int fdsEnd = fdCount(svad);
    std::cout << "[ measured ] load: " << kClients << " clients, " << elapsed
              << " s: " << counts.allocs << " allocations (" << counts.allocs / elapsed << "/s), "
              << counts.pasids << " PASIDs, " << counts.virtIds << " virtual IDs, "
              << counts.releases << " releases, " << counts.errors << " errors; " << checks
              << " checks, " << violations << " violations; svad RSS " << rssStart << " -> "
              << rssEnd << " KiB, fds " << fdsIdle << " idle, " << fdsStart << " under load, "
              << fdsEnd << " at the end" << std::endl;
    EXPECT_EQ(violations, 0U) << firstViolation;
    EXPECT_EQ(counts.errors, 0U) << ::testing::PrintToString(failures);
    EXPECT_GT(checks, static_cast<size_t>(seconds)); // about two a second
    EXPECT_GT(counts.allocs, static_cast<uint64_t>(kClients));
    EXPECT_EQ(fdsEnd, fdsIdle) << "idle:\n" << fdsIdleTargets << "at the end:\n" << fdTargets(svad);
    // Flat: what the allocator keeps after the warm-up, not growth with the work done.
    ASSERT_GT(rssStart, 0);
    EXPECT_LT(rssEnd, rssStart + rssStart / 5 + 2048)
        << "svad's RSS grew from " << rssStart << " to " << rssEnd << " KiB";
    EXPECT_TRUE(f.svad().running()) << f.svad().log();
}

} // namespace
} // namespace svad::test
