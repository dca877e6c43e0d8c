// Hotplug to D-Bus signal, against a no-op call, in the same run: the real
// svad (sim backend) on a umockdev testbed; umockdev delivers a uevent to
// svad's libudev monitor, svad reads the device again and emits
// PropertiesChanged, which a client of its own receives.
//
//   svad_bench_hotplug_signal [--n N] [--settle MS]
//
// Each iteration flips an NVMe function's driver link (nvme <-> vfio-pci),
// sends "bind" and times until the client sees the Device's Driver change;
// a Peer.Ping to svad (answered by sd-bus) is the no-op baseline. --settle
// is svad's --hotplug-settle (default 50 ms, svad's default), the window in
// which the events following a first one are gathered. Each iteration waits
// out that window first, so every event is a lone one, which svad reads at
// once: the settle window should not show in the figures.
// The program runs itself under umockdev-wrapper when it is not already.
#include "fixture.h"
#include "testbed.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using svad::test::percentiles;

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kNvme = "0000:5e:00.0";

// Waits for the Driver property of the NVMe's object to become `want`.
class DriverWatch {
public:
    explicit DriverWatch(const std::string& bus)
        : connection_(sdbus::createSessionBusConnectionWithAddress(bus)),
          proxy_(svad::dbus::compat::makeProxy(*connection_, "org.svad.Svad1",
                                               std::string(kRoot) + "/device/0000_5e_00_0")) {
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
    std::string driver_ = "nvme";
    Clock::time_point seen_;
};

void setDriver(const std::string& sysfs, const std::string& driver) {
    const std::string link = sysfs + "/devices/pci0000:5e/" + kNvme + "/driver";
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
    svad::test::parseIntOptions(argc, argv, {{"--n", &n, 1}, {"--settle", &settle, 0}});

    svad::test::Testbed testbed;
    svad::test::SvadFixture f(svad::test::testHost(), {"--hotplug-settle", std::to_string(settle)},
                              testbed.root());
    DriverWatch watch(f.bus());
    auto root = svad::dbus::compat::makeProxy(f.client(), "org.svad.Svad1", kRoot);
    const std::string devpath = svad::test::pciDevpath(kNvme);

    std::vector<double> hotplug;
    std::vector<double> ping;
    const std::string drivers[2] = {"vfio-pci", "nvme"};
    for (int i = 0; i < n + 5; ++i) {
        const std::string& want = drivers[i % 2];
        setDriver(f.sysfs(), want);
        const auto t0 = Clock::now();
        testbed.uevent(devpath, "bind");
        auto seen = watch.waitFor(want);
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
            ping.push_back(svad::test::micros(p1 - p0));
        }
        // Each event a lone one: the next comes after a quiet spell of `settle`.
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(settle + 5));
    }
    auto h = percentiles(hotplug);
    auto p = percentiles(ping);
    std::printf("lone hotplug event -> signal, N=%d, svad --hotplug-settle %d (us)     p50        "
                "p99   p50/no-op\n",
                n, settle);
    std::printf("  uevent (umockdev) -> PropertiesChanged                %10.1f %10.1f %10.1fx "
                "(target <= 3x)\n",
                h.p50, h.p99, h.p50 / p.p50);
    std::printf("  Peer.Ping (no-op, answered by sd-bus)                 %10.1f %10.1f\n", p.p50,
                p.p99);
    return 0;
}
