// What a scrape of /metrics costs svad, against prometheus-cpp's own exposer
// serving the same body, and where keeping the metrics current costs instead,
// in the same run.
//
//   svad_bench_metrics_scrape [--contexts N] [--scrapes S] [--calls C]
//
// How svad's metrics work: svad pushes. Its gauges are set on the loop thread
// when something changes (svad/dbus/service_metrics.cpp): at every context
// created, changed or released, Metrics::updateContexts walks all the held
// contexts and sets the context gauges; the host's gauges are set when a new
// host is read. There is no collectable computed at scrape time: a scrape is
// prometheus-cpp's Registry::Collect and text serialization on svad's HTTP
// endpoint's thread (svad/metrics/http_endpoint.h), reading atomics, and the
// loop thread takes no part in it.
//
// So the benchmark compares:
//  1. A scrape of svad holding N contexts (sim backend, a generated host of N+1
//     vfio-pci functions, one IOMMU group each; this program allocates the
//     contexts, one function each, and stays their owner), against a bare
//     exposer: another process running prometheus-cpp's Exposer (civetweb, the
//     HTTP stack svad used before its own endpoint, with the options svad gave
//     it: kBare* below) and a registry holding exactly
//     svad's series, every family, type, help text, label and value, histograms
//     included, rebuilt from svad's exposition and pushed ahead; its body is
//     checked to hold the same lines as svad's. That is the floor of
//     prometheus-cpp and civetweb for that body, the baseline svad's own
//     endpoint is held to. Each scrape is a fresh HTTP/1.0
//     GET over loopback, alternating between the two; printed: p50/p99 latency,
//     each process's CPU time per scrape (all its threads, from
//     /proc/PID/task/*/schedstat), and svad's extra per scrape (svad's minus the
//     floor's). svad's loop thread's CPU over the scrapes is printed too.
//  2. The price of pushing: AllocateContext+ReleaseContext p50 of the spare
//     function with N held (svad recounts the N contexts three times in it: at
//     the allocation's result, at the context's creation and at its release), on
//     that svad against a second svad on the same host with the same N contexts
//     and --metrics-address off (no metrics object at all); the calls alternate
//     between the two.
#include "fixture.h"
#include "svad/metrics/http_endpoint.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <sdbus-c++/sdbus-c++.h>
#include <set>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using svad::test::percentiles;

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

// Thrown to main, so that the svads, their buses and the bare exposer go on the way out.
[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what);
}

// The civetweb options of the bare exposer: those svad gave prometheus-cpp's
// Exposer when it served its metrics through it (4 workers, a request head
// within 100 ms, 16 accepted connections waiting for a worker).
constexpr int kBareThreads = 4;
constexpr int kBareRequestTimeoutMs = 100;
constexpr int kBareConnectionQueue = 16;

// prometheus-cpp's Exposer serves metrics of its own beside the registry's
// (exposer_scrapes_total, exposer_transferred_bytes_total,
// exposer_request_latencies): the bare exposer has them, svad's endpoint not.
bool exposerOwn(const std::string& line) {
    for (const char* p : {"exposer_", "# HELP exposer_", "# TYPE exposer_"}) {
        if (line.rfind(p, 0) == 0) {
            return true;
        }
    }
    return false;
}

// The lines of an exposition, without the exposer's own.
std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && !exposerOwn(line)) {
            out.push_back(line);
        }
    }
    return out;
}

size_t seriesIn(const std::string& exposition) {
    size_t n = 0;
    for (const auto& l : lines(exposition)) {
        n += l[0] != '#' ? 1 : 0;
    }
    return n;
}

// One sample line of a text exposition: name{labels} value.
struct Sample {
    std::string name;
    prometheus::Labels labels;
    double value = 0;
};

Sample parseSample(const std::string& line) {
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') {
        ++i;
    }
    s.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
        ++i;
        while (i < line.size() && line[i] != '}') {
            const size_t eq = line.find('=', i);
            if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
                fail("cannot read the labels of: " + line);
            }
            const std::string key = line.substr(i, eq - i);
            std::string value;
            size_t j = eq + 2;
            for (; j < line.size() && line[j] != '"'; ++j) {
                if (line[j] == '\\' && j + 1 < line.size()) {
                    ++j;
                    value += line[j] == 'n' ? '\n' : line[j];
                } else {
                    value += line[j];
                }
            }
            s.labels[key] = value;
            i = j + 1;
            if (i < line.size() && line[i] == ',') {
                ++i;
            }
        }
        ++i;
    }
    const std::string rest = i < line.size() ? line.substr(i + 1) : "";
    s.value = std::stod(rest.substr(0, rest.find(' ')));
    return s;
}

// A registry holding the families and series of `exposition` (gauges, counters
// and histograms, as prometheus-cpp writes them), with their values.
std::shared_ptr<prometheus::Registry> rebuild(const std::string& exposition) {
    auto registry = std::make_shared<prometheus::Registry>();
    std::map<std::string, std::string> help;
    std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges;
    std::map<std::string, prometheus::Family<prometheus::Counter>*> counters;
    std::map<std::string, prometheus::Family<prometheus::Histogram>*> histograms;
    // Histogram series by family and labels (without le): bucket bounds and
    // cumulative counts, sum.
    struct Series {
        std::vector<std::pair<double, double>> buckets;
        double sum = 0;
    };
    std::map<std::string, std::map<prometheus::Labels, Series>> histogramSeries;
    for (const auto& line : lines(exposition)) {
        if (line.rfind("# HELP ", 0) == 0) {
            const size_t sp = line.find(' ', 7);
            help[line.substr(7, sp - 7)] = sp == std::string::npos ? "" : line.substr(sp + 1);
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            const size_t sp = line.find(' ', 7);
            const std::string name = line.substr(7, sp - 7);
            const std::string type = line.substr(sp + 1);
            if (type == "gauge") {
                gauges[name] =
                    &prometheus::BuildGauge().Name(name).Help(help[name]).Register(*registry);
            } else if (type == "counter") {
                counters[name] =
                    &prometheus::BuildCounter().Name(name).Help(help[name]).Register(*registry);
            } else if (type == "histogram") {
                histograms[name] =
                    &prometheus::BuildHistogram().Name(name).Help(help[name]).Register(*registry);
                histogramSeries[name];
            } else {
                fail("no rebuild for a metric of type " + type + ": " + line);
            }
            continue;
        }
        if (line[0] == '#') {
            continue;
        }
        Sample s = parseSample(line);
        if (auto g = gauges.find(s.name); g != gauges.end()) {
            g->second->Add(s.labels).Set(s.value);
            continue;
        }
        if (auto c = counters.find(s.name); c != counters.end()) {
            c->second->Add(s.labels).Increment(s.value);
            continue;
        }
        bool found = false;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            const std::string sfx = suffix;
            if (s.name.size() <= sfx.size() ||
                s.name.compare(s.name.size() - sfx.size(), sfx.size(), sfx) != 0) {
                continue;
            }
            const std::string family = s.name.substr(0, s.name.size() - sfx.size());
            auto h = histogramSeries.find(family);
            if (h == histogramSeries.end()) {
                continue;
            }
            found = true;
            if (sfx == "_bucket") {
                const std::string le = s.labels["le"];
                s.labels.erase("le");
                h->second[s.labels].buckets.emplace_back(std::stod(le), s.value);
            } else if (sfx == "_sum") {
                h->second[s.labels].sum = s.value;
            }
        }
        if (!found) {
            fail("a sample of no family: " + line);
        }
    }
    for (auto& [name, bySeries] : histogramSeries) {
        for (auto& [labels, series] : bySeries) {
            std::sort(series.buckets.begin(), series.buckets.end());
            prometheus::Histogram::BucketBoundaries bounds;
            std::vector<double> increments;
            double before = 0;
            for (const auto& [le, cumulative] : series.buckets) {
                if (le != std::numeric_limits<double>::infinity()) {
                    bounds.push_back(le);
                }
                increments.push_back(cumulative - before);
                before = cumulative;
            }
            histograms[name]->Add(labels, bounds).ObserveMultiple(increments, series.sum);
        }
    }
    return registry;
}

// The bare exposer: serves the series of the exposition in `file` on `port`
// with the civetweb options svad used, until killed.
int serveBare(const std::string& file, const std::string& port) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    auto registry = rebuild(text.str());
    prometheus::Exposer exposer(std::vector<std::string>{
        "listening_ports", "127.0.0.1:" + port, "num_threads", std::to_string(kBareThreads),
        "request_timeout_ms", std::to_string(kBareRequestTimeoutMs), "connection_queue",
        std::to_string(kBareConnectionQueue), "listen_backlog",
        std::to_string(svad::metrics::kHttpListenBacklog)});
    exposer.RegisterCollectable(registry);
    for (;;) {
        ::pause();
    }
}

// CPU time of a task (schedstat: ns on a CPU).
uint64_t taskCpuNs(const std::string& statFile) {
    std::ifstream in(statFile);
    uint64_t ns = 0;
    in >> ns;
    return ns;
}

// CPU time of all the threads of `pid`, in ns.
uint64_t processCpuNs(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return 0;
    }
    uint64_t ns = 0;
    while (const struct dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') {
            ns += taskCpuNs(dir + "/" + e->d_name + "/schedstat");
        }
    }
    ::closedir(d);
    return ns;
}

uint64_t loopCpuNs(pid_t pid) {
    const std::string p = std::to_string(pid);
    return taskCpuNs("/proc/" + p + "/task/" + p + "/schedstat");
}

std::string sortedLines(const std::string& text) {
    auto l = lines(text);
    std::sort(l.begin(), l.end());
    std::string out;
    for (const auto& x : l) {
        out += x + "\n";
    }
    return out;
}

void allocateAll(svad::test::SvadFixture& f, const svad::hostgen::HostSpec& host, int n) {
    auto root = f.proxy(kRoot);
    for (int i = 0; i < n; ++i) {
        try {
            (void)svad::test::allocateContext(*root, "vm" + std::to_string(i),
                                              {host.devices[static_cast<size_t>(i)].address});
        } catch (const sdbus::Error& e) {
            fail("context " + std::to_string(i) + ": " + e.getName() + ": " + e.getMessage());
        }
    }
}

int run(int contexts, int scrapes, int calls);

} // namespace

int main(int argc, char** argv) {
    try {
        if (argc == 4 && std::string(argv[1]) == "--bare-exposer") {
            return serveBare(argv[2], argv[3]);
        }
        int contexts = 1000;
        int scrapes = 500;
        int calls = 500;
        svad::test::parseIntOptions(
            argc, argv,
            {{"--contexts", &contexts, 1}, {"--scrapes", &scrapes, 1}, {"--calls", &calls, 1}});
        return run(contexts, scrapes, calls);
    } catch (const std::exception& e) {
        (void)std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}

namespace {

int run(int contexts, int scrapes, int calls) {
    // Each context keeps fds in svad (an iommufd, a device fd, ...), which inherits this limit.
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)::setrlimit(RLIMIT_NOFILE, &rl);
    }

    svad::test::TempDir conf;
    const auto host = svad::test::vfioHost("metrics-bench", static_cast<uint32_t>(contexts) + 1);
    const std::string spare = host.devices.back().address;
    const uint16_t port = svad::test::freePort();
    svad::test::SvadFixture withMetrics(host,
                                        {"--metrics-address", "127.0.0.1:" + std::to_string(port)},
                                        {}, svad::test::systemBusConfig(conf, false));
    allocateAll(withMetrics, host, contexts);

    // 1. The scrape, against the floor serving the same series.
    const std::string first = svad::test::httpGet(port);
    const size_t series = seriesIn(first);
    const double held =
        svad::test::metricValue(first, "svad_contexts{mode=\"handoff\",plugin=\"vfio\"}");
    const std::string file = conf.path() + "/exposition.txt";
    std::ofstream(file) << first;
    const uint16_t barePort = svad::test::freePort();
    svad::test::Process bare({"/proc/self/exe", "--bare-exposer", file, std::to_string(barePort)},
                             conf.path() + "/bare.log");
    std::string floorBody;
    if (!svad::test::waitUntil(
            [&] {
                try {
                    floorBody = svad::test::httpGet(barePort);
                    return true;
                } catch (const std::runtime_error&) {
                    return false;
                }
            },
            10000)) {
        fail("the bare exposer did not answer: " + bare.log());
    }
    // The same lines, the exposer's own left out; in the same order too, unless
    // prometheus-cpp's unordered series came out in another.
    const bool sameLines = sortedLines(floorBody) == sortedLines(first);
    const bool sameOrder = lines(floorBody) == lines(first);
    if (!sameLines) {
        fail("the bare exposer's body differs from svad's:\n--- svad\n" + first + "--- bare\n" +
             floorBody);
    }

    std::vector<double> svadTimes;
    std::vector<double> floorTimes;
    size_t bytes = 0;
    for (int i = 0; i < 20; ++i) { // warm-up
        (void)svad::test::httpGet(port);
        (void)svad::test::httpGet(barePort);
    }
    const pid_t svadPid = withMetrics.svad().pid();
    const uint64_t svadCpu0 = processCpuNs(svadPid);
    const uint64_t loopCpu0 = loopCpuNs(svadPid);
    const uint64_t floorCpu0 = processCpuNs(bare.pid());
    for (int i = 0; i < scrapes; ++i) {
        auto t0 = Clock::now();
        bytes = svad::test::httpGet(port).size();
        auto t1 = Clock::now();
        (void)svad::test::httpGet(barePort);
        auto t2 = Clock::now();
        svadTimes.push_back(svad::test::micros(t1 - t0));
        floorTimes.push_back(svad::test::micros(t2 - t1));
    }
    const double svadCpu = static_cast<double>(processCpuNs(svadPid) - svadCpu0) / 1000 / scrapes;
    const double loopCpu = static_cast<double>(loopCpuNs(svadPid) - loopCpu0) / 1000;
    const double floorCpu =
        static_cast<double>(processCpuNs(bare.pid()) - floorCpu0) / 1000 / scrapes;
    bare.signal(SIGTERM);
    bare.wait(5000);

    // 2. The price of pushing: the same allocations on an svad without metrics.
    svad::test::SvadFixture without(host, {}, {}, svad::test::systemBusConfig(conf, false));
    allocateAll(without, host, contexts);
    auto rootOn = withMetrics.proxy(kRoot);
    auto rootOff = without.proxy(kRoot);
    auto roundTrip = [&spare](sdbus::IProxy& root) {
        auto a = svad::test::allocateContext(root, "vm-spare", {spare});
        root.callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
    };
    std::vector<double> on;
    std::vector<double> off;
    try {
        for (int i = 0; i < calls / 10 + calls; ++i) {
            auto t0 = Clock::now();
            roundTrip(*rootOn);
            auto t1 = Clock::now();
            roundTrip(*rootOff);
            auto t2 = Clock::now();
            if (i >= calls / 10) {
                on.push_back(svad::test::micros(t1 - t0));
                off.push_back(svad::test::micros(t2 - t1));
            }
        }
    } catch (const sdbus::Error& e) {
        fail("AllocateContext/ReleaseContext: " + e.getName() + ": " + e.getMessage());
    }

    const auto s = percentiles(svadTimes);
    const auto b = percentiles(floorTimes);
    std::printf("svad holds %.0f contexts on %d+1 functions; its body: %zu series, %zu bytes\n",
                held, contexts, series, bytes);
    std::printf("svad pushes its gauges on change; nothing is computed at scrape time\n");
    std::printf(
        "bare exposer: prometheus-cpp's Exposer (civetweb), the same series and values "
        "pushed ahead; the same lines as svad's body (the exposer's own metrics aside): %s (in "
        "the same order: %s)\n",
        sameLines ? "yes" : "no", sameOrder ? "yes" : "no, series in another order");
    std::printf("\nscrape of /metrics, N=%d, alternating (us)       p50       p99   p50 ratio\n",
                scrapes);
    std::printf("  bare exposer (the floor)                   %9.1f %9.1f\n", b.p50, b.p99);
    std::printf("  svad                                       %9.1f %9.1f %9.2fx\n", s.p50, s.p99,
                s.p50 / b.p50);
    std::printf("\nCPU per scrape, all threads (us)\n");
    std::printf("  bare exposer (the floor)                   %9.1f\n", floorCpu);
    std::printf("  svad                                       %9.1f\n", svadCpu);
    std::printf("  svad's extra per scrape                    %9.1f\n", svadCpu - floorCpu);
    std::printf("  svad's loop thread, all %d scrapes         %9.1f\n", scrapes, loopCpu);

    const auto pOn = percentiles(on);
    const auto pOff = percentiles(off);
    std::printf("\nthe price of pushing: AllocateContext+ReleaseContext with %d held, N=%d "
                "(us)\n",
                contexts, calls);
    std::printf("                                                   p50       p99   p50 ratio\n");
    std::printf("  svad, --metrics-address off                %9.1f %9.1f\n", pOff.p50, pOff.p99);
    std::printf("  svad with metrics (3 recounts of %5d)     %9.1f %9.1f %9.2fx\n", contexts,
                pOn.p50, pOn.p99, pOn.p50 / pOff.p50);
    std::printf("  metrics' cost per round trip               %9.1f\n", pOn.p50 - pOff.p50);
    return 0;
}

} // namespace
