// A scrape of svad's metrics endpoint with many contexts, against a bare
// prometheus-cpp exposer serving the same number of series, in the same run.
//
//   svad_bench_metrics_scrape [--contexts N] [--scrapes S]
//
// svad (sim backend) runs on a generated host of N vfio-pci functions, one
// IOMMU group each, and holds N contexts (one device each, allocated by this
// program, which stays their owner). Each scrape is a fresh HTTP/1.0 GET of
// /metrics over loopback, alternating between svad and the bare exposer; the
// p50/p99 of each and the ratio are printed. svad's series do not grow with
// the contexts (they are counted by plugin and mode), so a second bare
// exposer with one series per context shows what per-context series would cost.
#include "fixture.h"
#include "svad/metrics/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <sdbus-c++/sdbus-c++.h>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <vector>

namespace {

using svad::test::percentiles;

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

size_t seriesIn(const std::string& exposition) {
    std::istringstream in(exposition);
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
        n += !line.empty() && line[0] != '#' ? 1 : 0;
    }
    return n;
}

// A bare exposer of `series` gauges in one family.
struct Bare {
    explicit Bare(size_t series)
        : port(svad::test::freePort()), exposer("127.0.0.1:" + std::to_string(port), 2),
          registry(std::make_shared<prometheus::Registry>()) {
        auto& family =
            prometheus::BuildGauge().Name("bare_series").Help("a gauge").Register(*registry);
        for (size_t i = 0; i < series; ++i) {
            family.Add({{"i", std::to_string(i)}}).Set(static_cast<double>(i));
        }
        exposer.RegisterCollectable(registry);
    }
    uint16_t port;
    prometheus::Exposer exposer;
    std::shared_ptr<prometheus::Registry> registry;
};

} // namespace

int main(int argc, char** argv) {
    int contexts = 1000;
    int scrapes = 200;
    svad::test::parseIntOptions(argc, argv,
                                {{"--contexts", &contexts, 1}, {"--scrapes", &scrapes, 1}});
    // Each context keeps an iommufd and a device fd in svad (which inherits this limit).
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)::setrlimit(RLIMIT_NOFILE, &rl);
    }

    const uint16_t port = svad::test::freePort();
    svad::test::SvadFixture f(
        svad::test::vfioHost("metrics-bench", static_cast<uint32_t>(contexts)),
        {"--metrics-address", "127.0.0.1:" + std::to_string(port)});
    auto root = f.proxy(kRoot);
    for (int i = 0; i < contexts; ++i) {
        char addr[32];
        (void)std::snprintf(addr, sizeof addr, "0000:%02x:%02x.0", 0x81 + i / 32, i % 32);
        sdbus::ObjectPath ctx;
        sdbus::UnixFd iommufd;
        std::map<std::string, sdbus::UnixFd> fds;
        std::map<std::string, sdbus::Variant> info;
        try {
            root->callMethod("AllocateContext")
                .onInterface(kManager)
                .withArguments(std::string("vm") + std::to_string(i),
                               std::vector<std::string>{addr},
                               std::map<std::string, sdbus::Variant>{})
                .storeResultsTo(ctx, iommufd, fds, info);
        } catch (const sdbus::Error& e) {
            (void)std::fprintf(stderr, "context %d: %s: %s\n", i, e.getName().c_str(),
                               e.getMessage().c_str());
            return 1;
        }
    }
    const std::string first = svad::test::httpGet(port);
    const size_t series = seriesIn(first);
    const double held =
        svad::test::metricValue(first, "svad_contexts{mode=\"handoff\",plugin=\"vfio\"}");
    Bare same(series);
    Bare perContext(series + static_cast<size_t>(contexts));

    std::vector<double> svadTimes;
    std::vector<double> sameTimes;
    std::vector<double> perContextTimes;
    size_t bytes = 0;
    for (int i = 0; i < scrapes + 5; ++i) {
        auto t0 = Clock::now();
        bytes = svad::test::httpGet(port).size();
        auto t1 = Clock::now();
        (void)svad::test::httpGet(same.port);
        auto t2 = Clock::now();
        (void)svad::test::httpGet(perContext.port);
        auto t3 = Clock::now();
        if (i >= 5) {
            svadTimes.push_back(svad::test::micros(t1 - t0));
            sameTimes.push_back(svad::test::micros(t2 - t1));
            perContextTimes.push_back(svad::test::micros(t3 - t2));
        }
    }
    auto s = percentiles(svadTimes);
    auto b = percentiles(sameTimes);
    auto c = percentiles(perContextTimes);
    std::printf("svad holds %.0f contexts on %d functions; its scrape: %zu series, %zu bytes\n",
                held, contexts, series, bytes);
    std::printf("scrape of /metrics, N=%d (us)                         p50       p99   p50 ratio\n",
                scrapes);
    std::printf("  svad                                          %9.1f %9.1f %9.2fx\n", s.p50,
                s.p99, s.p50 / b.p50);
    std::printf("  bare prometheus-cpp exposer, %4zu series       %9.1f %9.1f\n", series, b.p50,
                b.p99);
    std::printf("  bare exposer, %4zu series (one per context)   %9.1f %9.1f %9.2fx\n",
                series + static_cast<size_t>(contexts), c.p50, c.p99, c.p50 / b.p50);
    return 0;
}
