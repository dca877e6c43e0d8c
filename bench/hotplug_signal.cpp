// Hotplug to D-Bus signal, against a no-op call, in the same run: the real
// svad (sim backend) on a umockdev testbed; umockdev delivers a uevent to
// svad's libudev monitor, svad reads the device again and emits
// PropertiesChanged, which a client of its own receives.
//
//   svad_bench_hotplug_signal [--n N] [--settle MS] [--functions F]
//
// Each iteration flips an NVMe function's driver link (nvme <-> vfio-pci),
// sends "bind" and times until the client sees the Device's Driver change;
// a Peer.Ping to svad (answered by sd-bus) is the no-op baseline. --settle
// is svad's --hotplug-settle (default 50 ms, svad's default), the window in
// which the events following a first one are gathered. Each iteration waits
// out that window first, so every event is a lone one, which svad reads at
// once: the settle window should not show in the figures. --functions F
// runs it on a synthesized host of F functions (with its work queues and vDPA
// devices) instead, flipping the first bound function that is neither a PF
// nor a VF, so that what a lone event costs can be compared across sizes.
// The harness's own share: a libudev monitor of this program, waiting on a
// thread of its own as svad's loop does, receives the same uevent (umockdev
// sends it to each monitor in turn), so what umockdev takes to deliver one is
// measured beside svad's signal, and svad's part is the difference, event by
// event: an estimate, since which monitor umockdev serves first is not fixed.
// The program runs itself under umockdev-wrapper when it is not already.
#include "fixture.h"
#include "svad/hostgen/hostgen.h"
#include "testbed.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <libudev.h>
#include <mutex>
#include <poll.h>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using svad::test::percentiles;

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kNvme = "0000:5e:00.0";

// The function whose driver the bench flips, its D-Bus path and devpath.
struct Target {
    std::string address;
    std::string objectPath;
    std::string devpath;
    std::string driver; // bound at the start
    std::string other;  // what it flips to
};

// Waits for the Driver property of the target's object to become `want`.
class DriverWatch {
public:
    DriverWatch(const std::string& bus, const Target& target)
        : connection_(sdbus::createSessionBusConnectionWithAddress(bus)),
          proxy_(svad::dbus::compat::makeProxy(*connection_, "org.svad.Svad1", target.objectPath)),
          driver_(target.driver) {
        proxy_->uponSignal("PropertiesChanged")
            .onInterface("org.freedesktop.DBus.Properties")
            .call([this](const std::string& iface,
                         const std::map<std::string, sdbus::Variant>& changed,
                         const std::vector<std::string>&) {
                auto it = changed.find("Driver");
                if (iface != "org.svad.Svad1.Device" || it == changed.end()) {
                    return;
                }
                std::lock_guard g(m_);
                driver_ = it->second.get<std::string>();
                seen_ = Clock::now();
                cv_.notify_all();
            });
        svad::dbus::compat::finishRegistration(*proxy_);
        connection_->enterEventLoopAsync();
    }
    ~DriverWatch() { connection_->leaveEventLoop(); }
    DriverWatch(const DriverWatch&) = delete;
    DriverWatch& operator=(const DriverWatch&) = delete;

    // When the change was seen, or nullopt after 5 s.
    std::optional<Clock::time_point> waitFor(const std::string& want) {
        std::unique_lock l(m_);
        if (!cv_.wait_for(l, std::chrono::seconds(5), [this, &want] { return driver_ == want; })) {
            return std::nullopt;
        }
        return seen_;
    }

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::mutex m_;
    std::condition_variable cv_;
    std::string driver_;
    Clock::time_point seen_;
};

// A libudev monitor of this program for PCI uevents, waiting on a thread of its
// own as svad's loop waits on its monitor: when each one arrived.
class DeliveryWatch {
public:
    DeliveryWatch() : udev_(udev_new()) {
        // umockdev's preload names a monitor's socket after its fd number
        // ($UMOCKDEV_DIR/eventN) and replaces one already there: the bench's monitor
        // must not get the number svad's has in its own process. Such numbers are
        // held while the monitor is made.
        std::vector<int> held;
        const char* dir = std::getenv("UMOCKDEV_DIR");
        for (int fd = ::eventfd(0, EFD_CLOEXEC); fd >= 0; fd = ::eventfd(0, EFD_CLOEXEC)) {
            std::string socket = dir == nullptr ? "" : dir;
            socket += "/event";
            socket += std::to_string(fd);
            if (dir == nullptr || !std::filesystem::exists(socket)) {
                ::close(fd);
                break;
            }
            held.push_back(fd);
        }
        if (udev_ != nullptr) {
            monitor_ = udev_monitor_new_from_netlink(udev_, "udev");
        }
        for (int fd : held) {
            ::close(fd);
        }
        ok_ = monitor_ != nullptr &&
              udev_monitor_filter_add_match_subsystem_devtype(monitor_, "pci", nullptr) >= 0 &&
              udev_monitor_enable_receiving(monitor_) >= 0;
        if (ok_) {
            thread_ = std::thread([this] { run(); });
        }
    }
    bool ok() const { return ok_; }
    ~DeliveryWatch() {
        stop_ = true;
        if (thread_.joinable()) {
            thread_.join();
        }
        if (monitor_ != nullptr) {
            udev_monitor_unref(monitor_);
        }
        udev_unref(udev_);
    }
    DeliveryWatch(const DeliveryWatch&) = delete;
    DeliveryWatch& operator=(const DeliveryWatch&) = delete;

    // When the next uevent arrived, or nullopt after 5 s.
    std::optional<Clock::time_point> next() {
        std::unique_lock l(m_);
        if (!cv_.wait_for(l, std::chrono::seconds(5), [this] { return !arrivals_.empty(); })) {
            return std::nullopt;
        }
        const auto at = arrivals_.front();
        arrivals_.pop_front();
        return at;
    }

private:
    void run() {
        pollfd p{udev_monitor_get_fd(monitor_), POLLIN, 0};
        while (!stop_) {
            if (::poll(&p, 1, 100) <= 0) {
                continue;
            }
            while (udev_device* dev = udev_monitor_receive_device(monitor_)) {
                const auto at = Clock::now();
                udev_device_unref(dev);
                std::lock_guard g(m_);
                arrivals_.push_back(at);
                cv_.notify_all();
            }
        }
    }

    udev* udev_;
    udev_monitor* monitor_ = nullptr;
    bool ok_ = false;
    std::atomic<bool> stop_{false};
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<Clock::time_point> arrivals_;
    std::thread thread_;
};

std::string objectPathOf(std::string address) {
    std::replace(address.begin(), address.end(), ':', '_');
    std::replace(address.begin(), address.end(), '.', '_');
    return std::string(kRoot) + "/device/" + address;
}

// The test host's NVMe, or on a synthesized host its first bound function
// that is neither a PF nor a VF; it flips to vfio-pci, or from it to nvme.
std::optional<Target> pickTarget(const std::string& sysfs, bool synthesized) {
    namespace fs = std::filesystem;
    std::vector<std::string> addresses;
    if (synthesized) {
        for (const auto& e : fs::directory_iterator(sysfs + "/bus/pci/devices")) {
            addresses.push_back(e.path().filename().string());
        }
        std::sort(addresses.begin(), addresses.end());
    } else {
        addresses.emplace_back(kNvme);
    }
    for (const auto& a : addresses) {
        std::string link = sysfs;
        link += "/bus/pci/devices/";
        link += a;
        const fs::path dir = fs::canonical(link);
        if (!fs::is_symlink(dir / "driver") || fs::exists(dir / "physfn") ||
            fs::exists(dir / "virtfn0")) {
            continue;
        }
        const std::string driver = fs::read_symlink(dir / "driver").filename().string();
        const std::string devpath = "/sys/" + fs::relative(dir, fs::canonical(sysfs)).string();
        return Target{a, objectPathOf(a), devpath, driver,
                      driver == "vfio-pci" ? "nvme" : "vfio-pci"};
    }
    return std::nullopt;
}

void setDriver(const std::string& sysfs, const Target& target, const std::string& driver) {
    const std::string link = sysfs + target.devpath.substr(4) + "/driver";
    std::filesystem::remove(link);
    std::filesystem::create_symlink("../../../bus/pci/drivers/" + driver, link);
}

} // namespace

int main(int argc, char** argv) {
    const char* preload = std::getenv("LD_PRELOAD");
    if (preload == nullptr || std::strstr(preload, "libumockdev-preload") == nullptr) {
        std::vector<char*> args;
        args.push_back(const_cast<char*>("umockdev-wrapper"));
        for (int i = 0; i < argc; ++i) {
            args.push_back(argv[i]);
        }
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        (void)std::fprintf(stderr, "cannot run umockdev-wrapper: %s\n", std::strerror(errno));
        return 1;
    }
    int n = 200;
    int settle = 50;
    int functions = 0;
    svad::test::parseIntOptions(
        argc, argv, {{"--n", &n, 1}, {"--settle", &settle, 0}, {"--functions", &functions, 0}});

    svad::test::Testbed testbed;
    svad::test::SvadFixture f(functions > 0
                                  ? svad::hostgen::synthesize(static_cast<uint32_t>(functions))
                                  : svad::test::testHost(),
                              {"--hotplug-settle", std::to_string(settle)}, testbed.root());
    const std::optional<Target> picked = pickTarget(f.sysfs(), functions > 0);
    if (!picked) {
        (void)std::fprintf(stderr, "no bound function to flip in the host\n");
        return 1;
    }
    const Target& target = *picked;
    DriverWatch watch(f.bus(), target);
    DeliveryWatch delivery;
    if (!delivery.ok()) {
        (void)std::fprintf(stderr, "cannot set up a libudev monitor\n");
        return 1;
    }
    auto root = svad::dbus::compat::makeProxy(f.client(), "org.svad.Svad1", kRoot);

    std::vector<double> hotplug;
    std::vector<double> delivered;
    std::vector<double> own;
    std::vector<double> ping;
    const std::string drivers[2] = {target.other, target.driver};
    for (int i = 0; i < n + 5; ++i) {
        const std::string& want = drivers[i % 2];
        setDriver(f.sysfs(), target, want);
        const auto t0 = Clock::now();
        testbed.uevent(target.devpath, "bind");
        auto arrived = delivery.next();
        auto seen = watch.waitFor(want);
        if (!arrived) {
            (void)std::fprintf(stderr, "the bench's own monitor received no uevent\n");
            return 1;
        }
        if (!seen) {
            (void)std::fprintf(stderr, "no PropertiesChanged for Driver=%s\n%s", want.c_str(),
                               f.svad().log().c_str());
            return 1;
        }
        const auto p0 = Clock::now();
        root->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
        const auto p1 = Clock::now();
        if (i >= 5) { // warm-up
            hotplug.push_back(svad::test::micros(*seen - t0));
            delivered.push_back(svad::test::micros(*arrived - t0));
            own.push_back(svad::test::micros(*seen - *arrived));
            ping.push_back(svad::test::micros(p1 - p0));
        }
        // Each event a lone one: the next comes after a quiet spell of `settle`.
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(settle + 5));
    }
    auto h = percentiles(hotplug);
    auto d = percentiles(delivered);
    auto o = percentiles(own);
    auto p = percentiles(ping);
    if (functions > 0) {
        std::printf("host: %d functions synthesized; %s flips between %s and %s\n", functions,
                    target.address.c_str(), target.driver.c_str(), target.other.c_str());
    }
    std::printf("lone hotplug event -> signal, N=%d, svad --hotplug-settle %d (us)     p50        "
                "p99   p50/no-op\n",
                n, settle);
    std::printf("  uevent (umockdev) -> PropertiesChanged                %10.1f %10.1f %10.1fx "
                "(target <= 3x)\n",
                h.p50, h.p99, h.p50 / p.p50);
    std::printf("  of which umockdev's delivery (to this bench's monitor) %9.1f %10.1f %10.1fx\n",
                d.p50, d.p99, d.p50 / p.p50);
    std::printf("  and svad's part (the difference, event by event)      %10.1f %10.1f %10.1fx\n",
                o.p50, o.p99, o.p50 / p.p50);
    std::printf("  Peer.Ping (no-op, answered by sd-bus)                 %10.1f %10.1f\n", p.p50,
                p.p99);
    return 0;
}
