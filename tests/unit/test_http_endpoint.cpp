// svad's metrics endpoint on its own (no bus, no svad): the answers to good and
// bad requests, a request that comes one byte at a time, the bound on open
// connections and whom it evicts, and a prompt stop.
#include "svad/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <dirent.h>
#include <fstream>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace svad {
namespace {

using metrics::httpAnswer;
using metrics::HttpEndpoint;
using Clock = std::chrono::steady_clock;

const std::string kBody = "# HELP x A metric\n# TYPE x gauge\nx 1\n";

std::string body() {
    return kBody;
}

core::ListenAddress loopback() {
    core::ListenAddress a;
    a.host = "127.0.0.1";
    a.port = 0;
    return a;
}

// A blocking connection to 127.0.0.1:port, reads waiting up to 5 s.
int connectTo(uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw std::runtime_error("socket failed");
    }
    struct timeval tv {
        5, 0
    };
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot connect");
    }
    return fd;
}

void sendAll(int fd, const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) {
            throw std::runtime_error("send failed");
        }
        sent += static_cast<size_t>(n);
    }
}

// What the server sends until it closes; without its close within 5 s, what
// it sent with "(no close)" appended ("(reset)" on a reset), so that a test sees it.
std::string readToClose(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0) {
            return out;
        }
        if (n < 0) {
            return out + (errno == EAGAIN ? "(no close)" : "(reset)");
        }
        out.append(buf, static_cast<size_t>(n));
    }
}

std::string exchange(uint16_t port, const std::string& request) {
    const int fd = connectTo(port);
    sendAll(fd, request);
    std::string answer = readToClose(fd);
    ::close(fd);
    return answer;
}

std::string statusLine(const std::string& answer) {
    return answer.substr(0, answer.find("\r\n"));
}

std::string headerOf(const std::string& answer, const std::string& name) {
    const size_t at = answer.find("\r\n" + name + ": ");
    if (at == std::string::npos || at > answer.find("\r\n\r\n")) {
        return "(none)";
    }
    const size_t from = at + 4 + name.size();
    return answer.substr(from, answer.find("\r\n", from) - from);
}

std::string bodyOf(const std::string& answer) {
    const size_t at = answer.find("\r\n\r\n");
    return at == std::string::npos ? "(no head end)" : answer.substr(at + 4);
}

// Whether the server closed `fd` within timeoutMs (end of file or a reset).
bool closedByServer(int fd, int timeoutMs) {
    struct pollfd p {
        fd, POLLIN, 0
    };
    if (::poll(&p, 1, timeoutMs) <= 0) {
        return false;
    }
    char c = 0;
    const ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN);
}

TEST(HttpAnswer, GetOfMetricsIsTheBodyWithItsLength) {
    const std::string a = httpAnswer("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
    EXPECT_EQ(statusLine(a), "HTTP/1.1 200 OK");
    EXPECT_EQ(headerOf(a, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(kBody.size()));
    EXPECT_EQ(headerOf(a, "Connection"), "close");
    EXPECT_EQ(bodyOf(a), kBody);
    // HTTP/1.0, a query, bare LF line ends: the same answer.
    EXPECT_EQ(httpAnswer("GET /metrics?x=1 HTTP/1.0\n\n", body), a);
}

TEST(HttpAnswer, HeadHasTheLengthAndNoBody) {
    const std::string a = httpAnswer("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
    EXPECT_EQ(statusLine(a), "HTTP/1.1 200 OK");
    EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(kBody.size()));
    EXPECT_EQ(bodyOf(a), "");
}

TEST(HttpAnswer, OtherPathsAreNotFound) {
    for (const char* req :
         {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metrics/ HTTP/1.0\r\n\r\n",
          "GET /metricsx HTTP/1.1\r\nhost: x\r\n\r\n", "POST /other HTTP/1.1\r\nHOST: x\r\n\r\n"}) {
        const std::string a = httpAnswer(req, body);
        EXPECT_EQ(statusLine(a), "HTTP/1.1 404 Not Found") << req;
        EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(bodyOf(a).size())) << req;
    }
    EXPECT_EQ(bodyOf(httpAnswer("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", body)), "");
}

TEST(HttpAnswer, OtherMethodsAreNotAllowed) {
    for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "get"}) {
        const std::string a =
            httpAnswer(std::string(method) + " /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
        EXPECT_EQ(statusLine(a), "HTTP/1.1 405 Method Not Allowed") << method;
        EXPECT_EQ(headerOf(a, "Allow"), "GET, HEAD") << method;
        EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(bodyOf(a).size())) << method;
    }
}

TEST(HttpAnswer, MalformedRequestsAreBad) {
    int asked = 0;
    auto counted = [&asked] {
        ++asked;
        return kBody;
    };
    for (const char* req :
         {"GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
          "GET /metrics  HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n",
          "GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", "G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
          "GET /metrics HTTP/1\r\nHost: x\r\n\r\n", "GET /metrics http/1.1\r\nHost: x\r\n\r\n",
          "GET /met\x01rics HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost: x\r\n folded: x\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
          "GET /metrics HTTP/1.1\r\n\r\n", // no Host
          "GET /metrics HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
          "GET /metrics HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost: x\r\nBad(Name): y\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nHost: x\r\nna\xffme: y\r\n\r\n"}) {
        const std::string a = httpAnswer(req, counted);
        EXPECT_EQ(statusLine(a), "HTTP/1.1 400 Bad Request") << req;
        EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(bodyOf(a).size())) << req;
    }
    EXPECT_EQ(asked, 0);
    // A HEAD's answer has no body, a refusal's neither.
    const std::string head = httpAnswer("HEAD /metrics HTTP/1.1\r\n\r\n", body);
    EXPECT_EQ(statusLine(head), "HTTP/1.1 400 Bad Request");
    EXPECT_EQ(bodyOf(head), "");
    EXPECT_EQ(statusLine(httpAnswer("GET /metrics HTTP/2.0\r\n\r\n", body)),
              "HTTP/1.1 505 HTTP Version Not Supported");
}

TEST(HttpAnswer, ABodyThatFailsIsAServerError) {
    const std::string a = httpAnswer("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                                     []() -> std::string { throw std::bad_alloc(); });
    EXPECT_EQ(statusLine(a), "HTTP/1.1 500 Internal Server Error");
}

TEST(HttpEndpoint, ServesAndClosesAfterTheAnswer) {
    HttpEndpoint e(loopback(), body);
    ASSERT_NE(e.port(), 0);
    const std::string a = exchange(e.port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    EXPECT_EQ(statusLine(a), "HTTP/1.1 200 OK") << a;
    EXPECT_EQ(bodyOf(a), kBody);
    EXPECT_EQ(statusLine(exchange(e.port(), "HEAD /metrics HTTP/1.0\r\n\r\n")), "HTTP/1.1 200 OK");
    EXPECT_EQ(bodyOf(exchange(e.port(), "HEAD /metrics HTTP/1.0\r\n\r\n")), "");
    EXPECT_EQ(statusLine(exchange(e.port(), "GET /nope HTTP/1.0\r\n\r\n")),
              "HTTP/1.1 404 Not Found");
    EXPECT_EQ(statusLine(exchange(e.port(), "DELETE /metrics HTTP/1.0\r\n\r\n")),
              "HTTP/1.1 405 Method Not Allowed");
    EXPECT_EQ(statusLine(exchange(e.port(), "nonsense\r\n\r\n")), "HTTP/1.1 400 Bad Request");
    // Bytes after the head (a body, a second request) are read away, not answered.
    const std::string two =
        exchange(e.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n" +
                               std::string(3000, 'x'));
    EXPECT_EQ(bodyOf(two), kBody) << two;
}

TEST(HttpEndpoint, ARequestOneByteAtATimeIsAnswered) {
    HttpEndpoint e(loopback(), body);
    const std::string request =
        "\r\nGET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
    const int fd = connectTo(e.port());
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (char c : request) {
        sendAll(fd, std::string(1, c));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const std::string a = readToClose(fd);
    ::close(fd);
    EXPECT_EQ(statusLine(a), "HTTP/1.1 200 OK") << a;
    EXPECT_EQ(bodyOf(a), kBody);
}

TEST(HttpEndpoint, AnOversizedHeadIs431) {
    HttpEndpoint e(loopback(), body);
    // Header fields without end, past 8 KiB.
    std::string request = "GET /metrics HTTP/1.1\r\n";
    while (request.size() <= metrics::kHttpMaxRequestHead + 100) {
        request += "X-Filler: " + std::string(100, 'a') + "\r\n";
    }
    const int fd = connectTo(e.port());
    sendAll(fd, request);
    const std::string a = readToClose(fd);
    ::close(fd);
    EXPECT_EQ(statusLine(a), "HTTP/1.1 431 Request Header Fields Too Large") << a;
    EXPECT_EQ(headerOf(a, "Content-Length"), std::to_string(bodyOf(a).size()));
    // Just under the bound is a head like any other.
    std::string fits = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ";
    fits += std::string(metrics::kHttpMaxRequestHead - fits.size() - 4, 'a') + "\r\n\r\n";
    ASSERT_EQ(fits.size(), metrics::kHttpMaxRequestHead);
    EXPECT_EQ(statusLine(exchange(e.port(), fits)), "HTTP/1.1 200 OK");
}

// At the bound, a new connection closes the one open longest without a whole
// request: idle connections evict each other, and a scrape still gets through.
TEST(HttpEndpoint, AFloodOfIdleConnectionsEvictsItself) {
    HttpEndpoint e(loopback(), body);
    const size_t extra = 10;
    std::vector<int> idle;
    for (size_t i = 0; i < metrics::kHttpMaxConnections + extra; ++i) {
        idle.push_back(connectTo(e.port()));
    }
    const auto t = Clock::now();
    const std::string a = exchange(e.port(), "GET /metrics HTTP/1.0\r\n\r\n");
    const double took = std::chrono::duration<double>(Clock::now() - t).count();
    EXPECT_EQ(bodyOf(a), kBody) << a;
    EXPECT_LT(took, 1.0);
    // The scrape evicted one more: the oldest extra + 1 are closed, the rest open.
    for (size_t i = 0; i < idle.size(); ++i) {
        const bool closed = closedByServer(idle[i], i <= extra ? 2000 : 10);
        EXPECT_EQ(closed, i <= extra) << "connection " << i;
    }
    for (int fd : idle) {
        ::close(fd);
    }
}

// A connection with its answer going out is not evicted before idle ones: a
// client that sent its request but reads slowly keeps its place.
TEST(HttpEndpoint, AnAnswerInProgressIsNotEvictedFirst) {
    const std::string big(16 << 20, 'x'); // far more than the socket buffers hold
    HttpEndpoint e(loopback(), [&big]() -> const std::string& { return big; });
    const int reader = connectTo(e.port());
    sendAll(reader, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<int> idle;
    for (size_t i = 0; i < metrics::kHttpMaxConnections + 5; ++i) {
        idle.push_back(connectTo(e.port()));
    }
    std::string a = readToClose(reader);
    ::close(reader);
    EXPECT_EQ(bodyOf(a).size(), big.size()) << statusLine(a);
    for (int fd : idle) {
        ::close(fd);
    }
}

TEST(HttpEndpoint, ATakenPortIsAnError) {
    HttpEndpoint first(loopback(), body);
    core::ListenAddress same = loopback();
    same.port = first.port();
    try {
        HttpEndpoint second(same, body);
        ADD_FAILURE() << "bound a port already listened on";
    } catch (const std::runtime_error& ex) {
        EXPECT_NE(std::string(ex.what()).find("bind: "), std::string::npos) << ex.what();
    }
}

TEST(HttpEndpoint, RunsOnAThreadNamedSvadMetrics) {
    auto named = [] {
        int n = 0;
        DIR* d = ::opendir("/proc/self/task");
        while (const struct dirent* t = d != nullptr ? ::readdir(d) : nullptr) {
            std::ifstream in(std::string("/proc/self/task/") + t->d_name + "/comm");
            std::string name;
            std::getline(in, name);
            n += name == "svad-metrics" ? 1 : 0;
        }
        if (d != nullptr) {
            ::closedir(d);
        }
        return n;
    };
    {
        HttpEndpoint e(loopback(), body);
        (void)exchange(e.port(), "GET /metrics HTTP/1.0\r\n\r\n");
        EXPECT_EQ(named(), 1);
    }
    EXPECT_EQ(named(), 0);
}

// The endpoint stops at once, with clients connected and one half-way through a
// request.
TEST(HttpEndpoint, StopsAtOnceWithClientsConnected) {
    std::vector<int> clients;
    double took = 0;
    {
        auto e = std::make_unique<HttpEndpoint>(loopback(), body);
        for (int i = 0; i < 20; ++i) {
            clients.push_back(connectTo(e->port()));
        }
        sendAll(clients.back(), "GET /met");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const auto t = Clock::now();
        e.reset();
        took = std::chrono::duration<double>(Clock::now() - t).count();
    }
    EXPECT_LT(took, 0.1);
    for (int fd : clients) {
        EXPECT_TRUE(closedByServer(fd, 1000));
        ::close(fd);
    }
}

} // namespace
} // namespace svad
