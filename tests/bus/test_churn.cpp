// Churn across crashes: 16 clients, each on a connection of its own, allocate
// and release contexts on a host of 24 functions while svad is killed with
// SIGKILL and started again 20 times, under a service manager (played by the
// test) that keeps the fds svad hands it. What must hold:
//   - after each restart, every context a client held when svad died is back
//     with the same path and devices, and with its fds;
//   - a device a client holds is never handed to another client;
//   - a context whose owner died while svad was down is released (as root,
//     the test names a child process as the owner of a few and kills it);
//   - an allocation whose reply was lost to a crash is found again by its
//     client (by VM name) and released: at the end no context is left.
// The figures are printed ("[ measured ]").
#include "fixture.h"
#include "svad/dbus/sdbus_compat.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <sys/wait.h>
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
constexpr int kRestarts = 20;
constexpr uint32_t kFunctions = 24;

using Objects =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

// Every context object on the bus with its VM and devices.
struct SeenContext {
    std::string vm;
    std::vector<std::string> devices;
    bool fdsHeld = false;
};
std::map<std::string, SeenContext> listContexts(sdbus::IProxy& proxy) {
    std::map<std::string, SeenContext> out;
    std::string start;
    std::string next;
    do {
        Objects page;
        proxy.callMethod("ListObjects")
            .onInterface(kManager)
            .withArguments(start, uint32_t{0})
            .storeResultsTo(page, next);
        for (const auto& [path, ifaces] : page) {
            auto it = ifaces.find(kContext);
            if (it == ifaces.end()) {
                continue;
            }
            SeenContext c;
            c.vm = it->second.at("Vm").get<std::string>();
            c.devices = it->second.at("Devices").get<std::vector<std::string>>();
            c.fdsHeld = it->second.at("FdsHeld").get<bool>();
            out[path] = c;
        }
        start = next;
    } while (!next.empty());
    return out;
}

// What the clients hold, as they know it: an entry goes in once AllocateContext
// answered, and out before ReleaseContext is sent.
struct Ledger {
    std::mutex mutex;
    std::map<std::string, std::pair<int, std::string>> byDevice; // device -> client, path
    // Contexts whose ReleaseContext was sent and did not fail: svad may have let them go.
    std::set<std::string> releasing;
    std::vector<std::string> violations;
};

struct Figures {
    std::atomic<int> allocated{0};
    std::atomic<int> released{0};
    std::atomic<int> refused{0};
    std::atomic<int> failedOnCrash{0};
    std::atomic<int> recovered{0};
};

class Client {
public:
    Client(int index, const std::string& bus, const std::vector<std::string>& functions,
           Ledger& ledger, Figures& figures, std::atomic<bool>& stop)
        : index_(index), vm_("churn-" + std::to_string(index)), functions_(functions),
          ledger_(ledger), figures_(figures), stop_(stop),
          connection_(sdbus::createSessionBusConnectionWithAddress(bus)),
          proxy_(dbus::compat::makeProxy(*connection_, "org.svad.Svad1", kRoot)),
          rng_(static_cast<unsigned>(20261130 + index)) {}

    void run() {
        while (!stop_) {
            if (needsRecovery_) {
                recover();
                continue;
            }
            const std::string device = functions_[rng_() % functions_.size()];
            std::string path;
            try {
                path = allocateContext(*proxy_, vm_, {device}).path;
            } catch (const sdbus::Error& e) {
                if (e.getName() == "org.svad.Svad1.Error.Busy") {
                    ++figures_.refused;
                } else {
                    // svad went down under the call: it may have made the context.
                    ++figures_.failedOnCrash;
                    needsRecovery_ = true;
                }
                pause();
                continue;
            }
            ++figures_.allocated;
            hold(device, path);
            std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng_() % 40));
            release(device, path);
        }
        // The end: whatever is left goes.
        for (int i = 0; i < 50 && (needsRecovery_ || !mine_.empty()); ++i) {
            recover();
        }
    }

    bool clean() const { return !needsRecovery_ && mine_.empty(); }

private:
    void hold(const std::string& device, const std::string& path) {
        std::lock_guard lock(ledger_.mutex);
        auto [it, fresh] = ledger_.byDevice.try_emplace(device, index_, path);
        if (!fresh) {
            ledger_.violations.push_back(device + " handed to client " + std::to_string(index_) +
                                         " (" + path + ") while client " +
                                         std::to_string(it->second.first) + " holds it (" +
                                         it->second.second + ")");
        }
        mine_[path] = device;
    }

    void release(const std::string& device, const std::string& path) {
        {
            std::lock_guard lock(ledger_.mutex);
            auto it = ledger_.byDevice.find(device);
            if (it != ledger_.byDevice.end() && it->second.first == index_) {
                ledger_.byDevice.erase(it);
            }
            ledger_.releasing.insert(path);
        }
        try {
            proxy_->callMethod("ReleaseContext")
                .onInterface(kManager)
                .withArguments(sdbus::ObjectPath(path));
            mine_.erase(path);
            ++figures_.released;
        } catch (const sdbus::Error& e) {
            {
                // Not released by this call: not sent, cut by a crash, or not found
                // (which the look after a restart counts against svad).
                std::lock_guard lock(ledger_.mutex);
                ledger_.releasing.erase(path);
            }
            if (e.getName() == "org.svad.Svad1.Error.NotFound") {
                mine_.erase(path); // gone already
            } else {
                ++figures_.failedOnCrash;
                needsRecovery_ = true; // released or not: the next listing says
            }
            pause();
        }
    }

    // After a call svad died under: every context of this client's VM goes.
    void recover() {
        std::map<std::string, SeenContext> all;
        try {
            all = listContexts(*proxy_);
        } catch (const sdbus::Error&) {
            pause(); // svad is still down
            return;
        }
        bool left = false;
        for (const auto& [path, c] : all) {
            if (c.vm != vm_) {
                continue;
            }
            const std::string device = c.devices.empty() ? std::string() : c.devices.front();
            if (mine_.count(path) == 0) {
                ++figures_.recovered; // its reply was lost
                hold(device, path);
            }
            release(device, path);
            left = left || mine_.count(path) != 0;
        }
        for (auto it = mine_.begin(); it != mine_.end();) {
            it = all.count(it->first) == 0 ? mine_.erase(it) : std::next(it);
        }
        if (!left) {
            needsRecovery_ = false;
        }
    }

    void pause() { std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng_() % 30)); }

    int index_;
    std::string vm_;
    const std::vector<std::string>& functions_;
    Ledger& ledger_;
    Figures& figures_;
    std::atomic<bool>& stop_;
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::minstd_rand rng_;
    std::map<std::string, std::string> mine_; // path -> device
    bool needsRecovery_ = false;
};

TEST(Churn, SixteenClientsAndTwentyCrashesLoseNoContextAndShareNoDevice) {
    const auto started = Clock::now();
    TempDir dir;
    FdStoreManager manager(dir.path() + "/notify");
    ::setenv("NOTIFY_SOCKET", manager.path().c_str(), 1); // restarts too
    struct Unset {
        ~Unset() { ::unsetenv("NOTIFY_SOCKET"); }
    } unset;
    SvadFixture f(vfioHost("churn", kFunctions), {"--state-dir", dir.path() + "/state"});
    std::vector<std::string> functions;
    for (uint32_t i = 0; i < kFunctions; ++i) {
        char addr[32];
        (void)std::snprintf(addr, sizeof addr, "0000:%02x:%02x.0", 0x81 + i / 32, i % 32);
        functions.emplace_back(addr);
    }
    // The last function is the tests's own, for contexts of owners that die.
    const std::string orphanDevice = functions.back();
    functions.pop_back();

    Ledger ledger;
    Figures figures;
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<std::thread> threads;
    clients.reserve(kClients);
    threads.reserve(kClients);
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(std::make_unique<Client>(i, f.bus(), functions, ledger, figures, stop));
    }
    for (auto& c : clients) {
        threads.emplace_back([&c] { c->run(); });
    }

    const bool root = ::geteuid() == 0;
    std::minstd_rand rng(7);
    int readopted = 0;
    int reaped = 0;
    int restarts = 0;
    std::vector<double> startMs;
    for (int r = 0; r < kRestarts; ++r) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
        // Every fourth time, as root: a context whose owner dies while svad is down.
        pid_t owner = -1;
        std::string orphan;
        if (root && r % 4 == 0) {
            owner = ::fork();
            ASSERT_GE(owner, 0);
            if (owner == 0) {
                ::pause();
                ::_exit(0);
            }
            try {
                orphan =
                    allocateContext(*f.proxy(kRoot), "churn-orphan", {orphanDevice},
                                    {{"owner_pid", sdbus::Variant(static_cast<uint32_t>(owner))}})
                        .path;
            } catch (const sdbus::Error& e) {
                ADD_FAILURE() << "the orphan's context: " << e.getMessage();
            }
        }
        std::map<std::string, std::pair<int, std::string>> held;
        {
            // Clients wait to release while svad dies: what they hold now must come back.
            std::lock_guard lock(ledger.mutex);
            held = ledger.byDevice;
            f.svad().signal(SIGKILL);
            ASSERT_NE(f.svad().wait(10000), -1);
        }
        if (owner > 0) {
            ::kill(owner, SIGKILL);
            int status = 0;
            (void)::waitpid(owner, &status, 0);
        }
        const auto t = Clock::now();
        f.restart(SIGKILL, manager.stored());
        startMs.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
        ++restarts;
        {
            std::lock_guard lock(ledger.mutex); // no client lets go while this looks
            const auto seen = listContexts(*f.proxy(kRoot));
            for (const auto& [device, who] : held) {
                // A client may have let go between the restart and this look: its
                // release, sent to the new svad, may have taken the context already.
                if (ledger.releasing.count(who.second) != 0) {
                    continue;
                }
                auto it = seen.find(who.second);
                if (it == seen.end()) {
                    ADD_FAILURE() << "restart " << r << ": " << who.second << " of client "
                                  << who.first << " is gone\n"
                                  << f.svad().log();
                    continue;
                }
                EXPECT_EQ(it->second.devices, std::vector<std::string>{device}) << who.second;
                EXPECT_TRUE(it->second.fdsHeld) << who.second << " came back without its fds";
                ++readopted;
            }
        }
        if (!orphan.empty()) {
            // Released on the way up: its owner exited while svad was down.
            const bool gone = waitUntil(
                [&f, &orphan] { return listContexts(*f.proxy(kRoot)).count(orphan) == 0; });
            EXPECT_TRUE(gone) << orphan << " of a dead owner is still there";
            reaped += gone ? 1 : 0;
        }
    }
    stop = true;
    for (auto& t : threads) {
        t.join();
    }
    for (const auto& c : clients) {
        EXPECT_TRUE(c->clean());
    }
    {
        std::lock_guard lock(ledger.mutex);
        EXPECT_TRUE(ledger.violations.empty()) << ledger.violations.front();
    }
    EXPECT_TRUE(waitUntil([&f] { return listContexts(*f.proxy(kRoot)).empty(); }))
        << f.svad().log();
    EXPECT_GT(figures.allocated.load(), kRestarts);
    EXPECT_GT(readopted, kRestarts) << "the restarts found nothing held to check";

    std::sort(startMs.begin(), startMs.end());
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    std::cout << "[ measured ] churn: " << restarts << " restarts by SIGKILL, " << readopted
              << " contexts re-adopted with their fds, " << reaped << " reaped (owner dead), "
              << figures.allocated << " allocated, " << figures.released << " released, "
              << figures.refused << " refused busy, " << figures.failedOnCrash
              << " calls cut by a crash, " << figures.recovered
              << " lost replies recovered; restart to name owned median "
              << startMs[startMs.size() / 2] << " ms, max " << startMs.back() << " ms; " << seconds
              << " s in all" << std::endl;
}

} // namespace
} // namespace svad::test
