// One listen-address check (svad/core/listen_address.h) for the configuration
// validator and the metrics endpoint: what --check-config accepts, svad serves.
#include "svad/core/config.h"
#include "svad/core/listen_address.h"
#include "svad/metrics/metrics.h"

#include <arpa/inet.h>
#include <cstring>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace svad {
namespace {

// The errors of `metrics.address: <address>` in a configuration.
std::vector<std::string> configErrors(const std::string& address) {
    auto load = core::parseConfig("metrics:\n  address: \"" + address + "\"\n", "t.yaml", "/p");
    return load.errors;
}

// The message Metrics::serve throws for `address`, or "" when it serves.
std::string serveError(metrics::Metrics& m, const std::string& address) {
    try {
        m.serve(address);
    } catch (const metrics::MetricsError& e) {
        return e.what();
    }
    return "";
}

// GET /metrics over loopback on `port`; the whole answer.
std::string scrape(int family, uint16_t port) {
    int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return "";
    }
    int rc = -1;
    if (family == AF_INET6) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        a.sin6_addr = in6addr_loopback;
        rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    std::string out;
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    if (rc == 0 &&
        ::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
        char buf[4096];
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<size_t>(n));
        }
    }
    ::close(fd);
    return out;
}

TEST(ListenAddress, Forms) {
    struct Good {
        const char* text;
        bool off;
        const char* host;
        bool ipv6;
        uint16_t port;
    };
    for (const Good& g :
         {Good{"127.0.0.1:9464", false, "127.0.0.1", false, 9464},
          Good{"0.0.0.0:0", false, "0.0.0.0", false, 0},
          Good{"127.0.0.1:65535", false, "127.0.0.1", false, 65535},
          Good{"[::1]:9464", false, "::1", true, 9464}, Good{"[::]:0", false, "::", true, 0},
          Good{"[::ffff:127.0.0.1]:1", false, "::ffff:127.0.0.1", true, 1},
          Good{"off", true, "", false, 0}}) {
        SCOPED_TRACE(g.text);
        std::string err;
        auto a = core::parseListenAddress(g.text, &err);
        ASSERT_TRUE(a) << err;
        EXPECT_EQ(a->off, g.off);
        EXPECT_EQ(a->host, g.host);
        EXPECT_EQ(a->ipv6, g.ipv6);
        EXPECT_EQ(a->port, g.port);
        EXPECT_FALSE(core::checkListenAddress(g.text));
    }
    for (const char* bad : {"",
                            "9464",
                            "127.0.0.1",
                            "127.0.0.1:",
                            ":9464",
                            "127.0.0.1:65536",
                            "127.0.0.1:-1",
                            "127.0.0.1:9x",
                            "127.0.0.1:009464",
                            "::1:9464",
                            "[::1]9464",
                            "[::1]:",
                            "[]:1",
                            "[127.0.0.1]:1",
                            "[::1%lo]:1",
                            "localhost:9464",
                            "256.0.0.1:1",
                            "127.1:1",
                            "OFF",
                            "127.0.0.1:9464,[::1]:9464",
                            "127.0.0.1:9464s"}) {
        SCOPED_TRACE(bad);
        std::string err;
        EXPECT_FALSE(core::parseListenAddress(bad, &err));
        EXPECT_EQ(err.rfind("'" + std::string(bad) + "': ", 0), 0U) << err;
        EXPECT_EQ(core::checkListenAddress(bad), err);
    }
}

TEST(ListenAddress, QuotesLongInputInPart) {
    const std::string longHost(100000, '1');
    auto err = core::checkListenAddress(longHost + ":1");
    ASSERT_TRUE(err);
    EXPECT_LT(err->size(), 400U) << *err;
}

// `::1:9464` passed --check-config and then stopped svad at start: now both refuse
// it with the same words.
TEST(ListenAddress, UnbracketedIpv6IsRefusedByConfigAndMetricsAlike) {
    auto why = core::checkListenAddress("::1:9464");
    ASSERT_TRUE(why);
    EXPECT_EQ(*why, "'::1:9464': write an IPv6 host in brackets, as [::1]:9464");
    EXPECT_EQ(configErrors("::1:9464"),
              std::vector<std::string>{"t.yaml:2:12: metrics.address: " + *why});
    metrics::Metrics m("0", "sim");
    EXPECT_EQ(metrics::unservable("::1:9464"), *why);
    EXPECT_EQ(serveError(m, "::1:9464"), *why);
    EXPECT_TRUE(m.ports().empty());
}

TEST(ListenAddress, HostNamesAreRefusedByConfigAndMetricsAlike) {
    auto why = core::checkListenAddress("localhost:9464");
    ASSERT_TRUE(why);
    EXPECT_EQ(configErrors("localhost:9464"),
              std::vector<std::string>{"t.yaml:2:12: metrics.address: " + *why});
    metrics::Metrics m("0", "sim");
    EXPECT_EQ(serveError(m, "localhost:9464"), *why);
}

TEST(ListenAddress, Ipv4AnyPortIsAcceptedByConfigAndServed) {
    EXPECT_TRUE(configErrors("127.0.0.1:0").empty());
    metrics::Metrics m("0", "sim");
    ASSERT_EQ(serveError(m, "127.0.0.1:0"), "");
    ASSERT_EQ(m.ports().size(), 1U);
    EXPECT_NE(m.ports()[0], 0);
    EXPECT_NE(scrape(AF_INET, m.ports()[0]).find("svad_build_info"), std::string::npos);
}

TEST(ListenAddress, BracketedIpv6IsAcceptedByConfigAndServed) {
    EXPECT_TRUE(configErrors("[::1]:9464").empty());
    EXPECT_TRUE(configErrors("[::1]:0").empty());
    int probe = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    if (probe >= 0) {
        ::close(probe);
    }
    if (!v6) {
        GTEST_SKIP() << "no IPv6 loopback here";
    }
    metrics::Metrics m("0", "sim");
    EXPECT_FALSE(metrics::unservable("[::1]:0"));
    ASSERT_EQ(serveError(m, "[::1]:0"), "");
    ASSERT_EQ(m.ports().size(), 1U);
    EXPECT_NE(scrape(AF_INET6, m.ports()[0]).find("svad_build_info"), std::string::npos);
}

TEST(ListenAddress, OffIsAcceptedByConfigAndServesNothing) {
    auto load = core::parseConfig("metrics:\n  address: off\n", "t.yaml", "/p");
    ASSERT_NE(load.config, nullptr);
    EXPECT_EQ(load.config->metricsAddress, "off");
    metrics::Metrics m("0", "sim");
    EXPECT_EQ(serveError(m, "off"), "");
    EXPECT_TRUE(m.ports().empty());
}

} // namespace
} // namespace svad
