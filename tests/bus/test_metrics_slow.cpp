// The metrics endpoint under slow and many clients: 1,000 connections that send
// nothing and 50 that send one byte every 2 s, against the real svad. Scrapes
// are answered within 1 s while they are held, and svad's fds stay bounded.
#include "fixture.h"
#include "svad/metrics/http_endpoint.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sstream>
#include <sys/resource.h>
#include <sys/wait.h>

namespace svad::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr int kIdle = 1000;
constexpr int kSlow = 50;
constexpr auto kDrip = std::chrono::seconds(2);

double secondsSince(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

// `count` connections to 127.0.0.1:port, made at once and waited for up to timeoutMs
// (a full listen queue drops a SYN, and the client retries it 1 s, 3 s, ... later);
// -1 for each that did not connect. The sockets stay non-blocking.
std::vector<int> connectMany(uint16_t port, int count, int timeoutMs) {
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    std::vector<int> fds;
    std::vector<struct pollfd> pending;
    fds.reserve(count);
    for (int i = 0; i < count; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && ::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0 &&
            errno != EINPROGRESS) {
            ::close(fd);
            fd = -1;
        }
        fds.push_back(fd);
    }
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
    for (;;) {
        pending.clear();
        for (int fd : fds) {
            if (fd >= 0) {
                pending.push_back({fd, POLLOUT, 0});
            }
        }
        (void)::poll(pending.data(), pending.size(), 0);
        const bool all = std::all_of(pending.begin(), pending.end(),
                                     [](const struct pollfd& p) { return p.revents != 0; });
        if (all || Clock::now() >= deadline) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    size_t j = 0;
    for (int& fd : fds) {
        if (fd < 0) {
            continue;
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (pending[j++].revents == 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
            err != 0) {
            ::close(fd);
            fd = -1;
        }
    }
    return fds;
}

// Whether the server closed its end of `fd` (end of file, or a reset); reads away
// what it sent before (a slow client gets a 400 answer).
bool closedByServer(int fd) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            continue;
        }
        return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
}

// Raises this process's soft fd limit towards `want`; the limit it has then.
rlim_t raiseFileLimit(rlim_t want) {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur < want) {
        rl.rlim_cur = std::min(want, rl.rlim_max);
        (void)::setrlimit(RLIMIT_NOFILE, &rl);
        (void)::getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

// Clients that send a request one byte every 2 s, on one thread, and note when svad
// dropped each of them.
class SlowClients {
public:
    SlowClients(uint16_t port, int count)
        : fds_(connectMany(port, count, 5000)), dropped_(fds_.size(), -1) {
        start_ = Clock::now();
        thread_ = std::thread([this] { run(); });
    }
    ~SlowClients() {
        stop_ = true;
        thread_.join();
        for (int fd : fds_) {
            ::close(fd);
        }
    }
    SlowClients(const SlowClients&) = delete;
    SlowClients& operator=(const SlowClients&) = delete;

    // Seconds from the connection to the drop, -1 for those not dropped.
    std::vector<double> dropped() {
        std::lock_guard<std::mutex> lock(mutex_);
        return dropped_;
    }
    int connected() const {
        return static_cast<int>(
            std::count_if(fds_.begin(), fds_.end(), [](int fd) { return fd >= 0; }));
    }

private:
    void run() {
        const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        size_t sent = 0;
        auto next = Clock::now();
        while (!stop_) {
            if (Clock::now() >= next) {
                next += kDrip;
                const char c = request[sent % request.size()];
                ++sent;
                for (int fd : fds_) {
                    if (fd >= 0) {
                        (void)::send(fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                    }
                }
            }
            {
                std::lock_guard<std::mutex> lock(mutex_);
                for (size_t i = 0; i < fds_.size(); ++i) {
                    if (fds_[i] >= 0 && dropped_[i] < 0 && closedByServer(fds_[i])) {
                        dropped_[i] = secondsSince(start_);
                    }
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    std::vector<int> fds_;
    std::vector<double> dropped_;
    std::mutex mutex_;
    std::atomic<bool> stop_{false};
    Clock::time_point start_;
    std::thread thread_;
};

// Whether `body` is a text exposition: comment lines, and samples whose value
// (after the last space) is a number; svad's build info among them.
bool parsesAsExposition(const std::string& body) {
    std::istringstream in(body);
    std::string line;
    int samples = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        const size_t sp = line.rfind(' ');
        if (sp == std::string::npos || sp + 1 == line.size()) {
            return false;
        }
        char* end = nullptr;
        const std::string value = line.substr(sp + 1);
        (void)std::strtod(value.c_str(), &end);
        if (end != value.c_str() + value.size()) {
            return false;
        }
        ++samples;
    }
    return samples > 0 && metricValue(body, "svad_pasid_capable_devices") == 2 &&
           body.find("svad_build_info{") != std::string::npos;
}

// A scrape is answered within 1 s while 50 slow and 1,000 idle clients hold
// connections open, and svad's fds stay bounded by the endpoint's bound. The
// scrapes run all along: from before the slow clients connect, through the
// idle ones connecting in waves, to while all of them are held.
TEST(MetricsSlowClients, ScrapesAnsweredAndFdsBounded) {
    // The clients' sockets, and room for the fixture's own.
    const rlim_t need = kIdle + kSlow + 256;
    if (raiseFileLimit(4096) < need) {
        GTEST_SKIP() << "the hard limit on open files is below " << need;
    }
    const uint16_t port = freePort();
    SvadFixture f(testHost(), {"--metrics-address", "127.0.0.1:" + std::to_string(port)});
    const pid_t pid = f.svad().pid();
    (void)httpGet(port);
    // (svad closes the scrape's socket once it sees this end closed.)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int baseline = fdCount(pid);
    ASSERT_GT(baseline, 0);
    // svad holds at most kHttpMaxConnections client sockets, and one more for a
    // moment (the connection just accepted, before the eviction it makes); 2 more
    // for a file svad may have open for a moment (a /proc read, a D-Bus call).
    const int bound = baseline + static_cast<int>(metrics::kHttpMaxConnections) + 1 + 2;

    std::atomic<int> maxFds{baseline};
    std::atomic<bool> sampling{true};
    std::thread sampler([&maxFds, &sampling, pid] {
        while (sampling) {
            int n = fdCount(pid);
            int seen = maxFds.load();
            while (n > seen && !maxFds.compare_exchange_weak(seen, n)) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    });

    // The scraper: a scrape every 200 ms, each a fresh connection, until told to
    // stop and it made kScrapes.
    constexpr size_t kScrapes = 24;
    std::mutex scrapesMutex;
    std::vector<double> scrapes;
    std::vector<std::string> scrapeErrors;
    std::atomic<bool> scraping{true};
    std::thread scraper([&] {
        for (;;) {
            {
                std::lock_guard<std::mutex> lock(scrapesMutex);
                if (!scraping && scrapes.size() >= kScrapes) {
                    return;
                }
            }
            const auto t = Clock::now();
            std::string error;
            try {
                const std::string body = httpGet(port);
                if (!parsesAsExposition(body)) {
                    error = "not an exposition of svad's: " + body.substr(0, 200);
                }
            } catch (const std::exception& e) {
                error = e.what();
            }
            const double took = secondsSince(t);
            {
                std::lock_guard<std::mutex> lock(scrapesMutex);
                if (!error.empty()) {
                    scrapeErrors.push_back("scrape " + std::to_string(scrapes.size()) + ": " +
                                           error);
                }
                scrapes.push_back(took);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
    });

    const auto opened = Clock::now();
    SlowClients slow(port, kSlow);
    // The idle connections in 10 waves of 100, 200 ms apart.
    std::vector<int> idle;
    for (int wave = 0; wave < 10; ++wave) {
        auto more = connectMany(port, kIdle / 10, 5000);
        idle.insert(idle.end(), more.begin(), more.end());
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const double openedIn = secondsSince(opened);
    const int idleConnected =
        static_cast<int>(std::count_if(idle.begin(), idle.end(), [](int fd) { return fd >= 0; }));
    std::printf("opened %d idle and %d slow connections in %.2f s\n", idleConnected,
                slow.connected(), openedIn);
    EXPECT_EQ(idleConnected, kIdle);
    EXPECT_EQ(slow.connected(), kSlow);

    // svad answers on D-Bus while its endpoint is full.
    const auto dbusAsked = Clock::now();
    EXPECT_NO_THROW(f.property(kRoot, kManager, "Version"));
    std::printf("D-Bus answered in %.3f s\n", secondsSince(dbusAsked));

    // All the clients still hold their sockets (the slow ones keep sending) while
    // the scraper makes its count.
    scraping = false;
    scraper.join();
    const double scrapedFor = secondsSince(opened);
    sampling = false;
    sampler.join();
    std::vector<double> sorted = scrapes;
    std::sort(sorted.begin(), sorted.end());
    std::printf("%zu scrapes over %.2f s from the first connection: the slowest %.3f s, the "
                "median %.3f s\n",
                scrapes.size(), scrapedFor, sorted.back(), sorted[sorted.size() / 2]);
    std::printf("svad's fds: %d before, at most %d under load (bound %d)\n", baseline,
                maxFds.load(), bound);
    for (const auto& e : scrapeErrors) {
        ADD_FAILURE() << e;
    }
    EXPECT_GE(scrapes.size(), kScrapes);
    // The scrapes ran while svad held the connections: the deadline of the last
    // wave's had not passed.
    EXPECT_LT(scrapedFor,
              openedIn + std::chrono::duration<double>(metrics::kHttpRequestDeadline).count());
    EXPECT_LT(sorted.back(), 1.0) << "the slowest of " << scrapes.size() << " scrapes";
    EXPECT_LE(maxFds.load(), bound);
    // ... and the endpoint was full: the clients were held by svad, not refused
    // (less 2 for an fd svad had open for a moment when the baseline was taken).
    EXPECT_GE(maxFds.load(), baseline + static_cast<int>(metrics::kHttpMaxConnections) - 2)
        << "the endpoint never held its bound of connections";
    EXPECT_NO_THROW(f.property(kRoot, kManager, "Version"));

    // Every client connection is closed by svad: evicted by a newer one, or at the
    // request deadline (the slow clients never finish their request).
    const double budget =
        std::chrono::duration<double>(metrics::kHttpRequestDeadline).count() + openedIn + 5;
    std::vector<bool> idleDropped(idle.size(), false);
    auto allDropped = [&idle, &idleDropped, &slow] {
        bool all = true;
        for (size_t i = 0; i < idle.size(); ++i) {
            idleDropped[i] = idleDropped[i] || (idle[i] >= 0 && closedByServer(idle[i]));
            all = all && idleDropped[i];
        }
        auto s = slow.dropped();
        return all && std::all_of(s.begin(), s.end(), [](double t) { return t >= 0; });
    };
    bool drained = false;
    while (!(drained = allDropped()) && secondsSince(opened) < budget) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const auto slowDrops = slow.dropped();
    const auto [firstSlow, lastSlow] = std::minmax_element(slowDrops.begin(), slowDrops.end());
    std::printf("the %d connections were closed by svad %.2f s after the first; the slow ones "
                "%.2f to %.2f s after they connected\n",
                kIdle + kSlow, secondsSince(opened), *firstSlow, *lastSlow);
    EXPECT_TRUE(drained) << std::count(idleDropped.begin(), idleDropped.end(), true)
                         << " idle connections closed in " << budget << " s";

    for (int fd : idle) {
        ::close(fd);
    }
    EXPECT_TRUE(waitUntil([pid, baseline] { return fdCount(pid) <= baseline; }))
        << fdCount(pid) << " fds, " << baseline << " before";
}

// SIGTERM stops svad quickly with metrics on, with no client and with slow clients
// connected to the endpoint.
TEST(MetricsSlowClients, StopsQuickly) {
    for (int clients : {0, kSlow}) {
        const uint16_t port = freePort();
        SvadFixture f(testHost(), {"--metrics-address", "127.0.0.1:" + std::to_string(port)});
        (void)httpGet(port);
        SlowClients slow(port, clients);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        const auto t = Clock::now();
        f.svad().signal(SIGTERM);
        const int status = f.svad().wait(10000);
        const double took = secondsSince(t);
        std::printf("svad stopped %.3f s after SIGTERM with %d slow clients\n", took, clients);
        ASSERT_NE(status, -1);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << f.svad().log();
        EXPECT_LT(took, 1.0) << clients << " slow clients";
    }
}

} // namespace
} // namespace svad::test
