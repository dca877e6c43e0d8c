#include "svad/metrics/http_endpoint.h"

#include "svad/core/log.h"
#include "svad/core/thread_name.h"

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <cerrno>
#include <fcntl.h>
#include <future>
#include <list>
#include <stdexcept>
#include <thread>
#include <utility>

namespace svad::metrics {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::string_view kMetricsPath = "/metrics";
constexpr std::string_view kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
// A pause before accepting again when svad is out of fds or memory.
constexpr std::chrono::milliseconds kAcceptRetry{100};

// RFC 9110's tchar: what a method may be made of.
bool isTokenChar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isDigit(char c) {
    return c >= '0' && c <= '9';
}

std::string response(std::string_view status, std::string_view type, const std::string& body,
                     bool withBody, std::string_view extra = {}) {
    std::string out;
    out.reserve(160 + (withBody ? body.size() : 0));
    out.append("HTTP/1.1 ").append(status).append("\r\nContent-Type: ").append(type);
    out.append("\r\nContent-Length: ").append(std::to_string(body.size()));
    out.append("\r\n").append(extra).append("Connection: close\r\n\r\n");
    if (withBody) {
        out.append(body);
    }
    return out;
}

std::string error(std::string_view status, bool withBody, std::string_view extra = {}) {
    return response(status, "text/plain; charset=utf-8", std::string(status) + "\n", withBody,
                    extra);
}

// Where the request head in `bytes` ends (just past its empty line), or npos.
// The search starts at `from`: what came before it was searched already.
size_t headEnd(std::string_view bytes, size_t from) {
    for (size_t i = bytes.find('\n', from); i != std::string_view::npos;
         i = bytes.find('\n', i + 1)) {
        if (i + 1 < bytes.size() && bytes[i + 1] == '\n') {
            return i + 2;
        }
        if (i + 2 < bytes.size() && bytes[i + 1] == '\r' && bytes[i + 2] == '\n') {
            return i + 3;
        }
    }
    return std::string_view::npos;
}

void closeOnExec(int fd) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0) {
        (void)::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

} // namespace

std::string httpAnswer(std::string_view head, const std::function<std::string()>& body) {
    const size_t eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    // METHOD SP TARGET SP HTTP/1.x, one space each.
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return error("400 Bad Request", true);
    }
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    bool ok = !method.empty() && !target.empty() && target.front() == '/';
    for (char c : method) {
        ok = ok && isTokenChar(c);
    }
    for (char c : target) {
        ok = ok && c > ' ' && c != '\x7f';
    }
    const bool httpVersion = version.size() == 8 && version.substr(0, 5) == "HTTP/" &&
                             isDigit(version[5]) && version[6] == '.' && isDigit(version[7]);
    if (!ok || !httpVersion) {
        return error("400 Bad Request", true);
    }
    const bool isHead = method == "HEAD"; // whose answer has no body, whatever it is
    // Each header field line is NAME: VALUE, the name a token with nothing between it and
    // the colon (no folded lines); Host is counted (RFC 9112, 3.2 and 5.1).
    int hosts = 0;
    for (size_t at = eol == std::string_view::npos ? head.size() : eol + 1; at < head.size();) {
        size_t next = head.find('\n', at);
        std::string_view field =
            head.substr(at, next == std::string_view::npos ? std::string_view::npos : next - at);
        if (!field.empty() && field.back() == '\r') {
            field.remove_suffix(1);
        }
        if (!field.empty()) {
            const size_t colon = field.find(':');
            if (colon == std::string_view::npos || colon == 0) {
                return error("400 Bad Request", !isHead);
            }
            const std::string_view name = field.substr(0, colon);
            for (char c : name) {
                if (!isTokenChar(c)) {
                    return error("400 Bad Request", !isHead);
                }
            }
            if (name.size() == 4 && std::tolower(static_cast<unsigned char>(name[0])) == 'h' &&
                std::tolower(static_cast<unsigned char>(name[1])) == 'o' &&
                std::tolower(static_cast<unsigned char>(name[2])) == 's' &&
                std::tolower(static_cast<unsigned char>(name[3])) == 't') {
                ++hosts;
            }
        }
        at = next == std::string_view::npos ? head.size() : next + 1;
    }
    if (version[5] != '1') {
        return error("505 HTTP Version Not Supported", !isHead);
    }
    // An HTTP/1.1 request names its Host once; no request names two.
    if (hosts > 1 || (hosts == 0 && version[7] != '0')) {
        return error("400 Bad Request", !isHead);
    }
    const std::string_view path = target.substr(0, target.find('?'));
    if (path != kMetricsPath) {
        return error("404 Not Found", !isHead);
    }
    if (method != "GET" && !isHead) {
        return error("405 Method Not Allowed", true, "Allow: GET, HEAD\r\n");
    }
    try {
        return response("200 OK", kMetricsType, body(), !isHead);
    } catch (const std::exception& e) {
        log::warning("metrics: cannot make the body", {{"ERROR", e.what()}});
        return error("500 Internal Server Error", !isHead);
    }
}

namespace {

// One client connection, from its acceptance to its close.
struct Connection {
    explicit Connection(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}

    enum class State {
        Reading,   // the request head is coming
        Writing,   // the answer is going out
        Lingering, // answered; what the client still sends is read away until it closes
    };
    tcp::socket socket;
    asio::steady_timer timer;
    std::string bytes; // the request head read so far; then the answer being written
    State state = State::Reading;
    bool open = true;
    std::list<std::shared_ptr<Connection>>::iterator at;
};

using ConnectionPtr = std::shared_ptr<Connection>;

} // namespace

struct HttpEndpoint::Impl {
    Impl(const core::ListenAddress& address, Body makeBody) : body(std::move(makeBody)) {
        error_code ec;
        const asio::ip::address ip = asio::ip::make_address(address.host, ec);
        if (ec) {
            throw std::runtime_error("'" + address.host + "': " + ec.message());
        }
        const tcp::endpoint where(ip, address.port);
        auto check = [&ec](const char* what) {
            if (ec) {
                throw std::runtime_error(std::string(what) + ": " + ec.message());
            }
        };
        (void)acceptor.open(where.protocol(), ec);
        check("socket");
        closeOnExec(acceptor.native_handle());
        (void)acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
        check("SO_REUSEADDR");
        if (address.ipv6) {
            // [::] is IPv6's any address, not IPv4's as well.
            (void)acceptor.set_option(asio::ip::v6_only(true), ec);
            check("IPV6_V6ONLY");
        }
        (void)acceptor.bind(where, ec);
        check("bind");
        (void)acceptor.listen(kHttpListenBacklog, ec);
        check("listen");
        port = acceptor.local_endpoint(ec).port();
        check("getsockname");
    }

    void accept() {
        acceptor.async_accept([this](const error_code& ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) {
                return;
            }
            if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
                ec == asio::error::no_memory || ec.value() == ENFILE) {
                // Out of fds or memory: the connection stays in the listen queue a while.
                acceptRetry.expires_after(kAcceptRetry);
                acceptRetry.async_wait([this](const error_code& e) {
                    if (!e) {
                        accept();
                    }
                });
                return;
            }
            if (!ec) {
                try {
                    admit(std::move(socket));
                } catch (const std::exception& e) {
                    // Out of memory: this one connection is dropped, and the
                    // endpoint goes on accepting.
                    log::warning("metrics: a connection is dropped", {{"ERROR", e.what()}});
                }
            }
            accept();
        });
    }

    void admit(tcp::socket socket) {
        closeOnExec(socket.native_handle());
        error_code ec;
        (void)socket.non_blocking(true, ec);
        if (ec) {
            return;
        }
        while (connections.size() >= kHttpMaxConnections) {
            evict();
        }
        auto c = std::make_shared<Connection>(std::move(socket));
        connections.push_back(c);
        c->at = std::prev(connections.end());
        c->timer.expires_after(kHttpRequestDeadline);
        c->timer.async_wait([this, c](const error_code& e) {
            if (!e) {
                close(c);
            }
        });
        // What the client has sent already is read now: a scraper, which sends its
        // request with its connection, is answered before any later connection
        // can take its place.
        readable(c);
    }

    // Closes the connection open longest that has no answer going out (one that
    // has not sent its whole request head, or one already answered); when every
    // connection is being answered, the one open longest.
    void evict() {
        for (const auto& c : connections) {
            if (c->state != Connection::State::Writing) {
                close(c);
                return;
            }
        }
        close(connections.front());
    }

    void close(const ConnectionPtr& c) {
        if (!c->open) {
            return;
        }
        c->open = false;
        error_code ec;
        (void)c->socket.close(ec);
        c->timer.cancel();
        connections.erase(c->at);
    }

    void waitReadable(const ConnectionPtr& c) {
        c->socket.async_wait(tcp::socket::wait_read, [this, c](const error_code& ec) {
            if (!c->open) {
                return;
            }
            if (ec) {
                close(c);
                return;
            }
            readable(c);
        });
    }

    // Reads what the client sent, into the one buffer of the thread: a connection
    // waiting for its request holds only the bytes it sent so far.
    void readable(const ConnectionPtr& c) {
        if (c->state == Connection::State::Lingering) {
            error_code ec;
            (void)c->socket.read_some(asio::buffer(buffer), ec);
            if (ec && ec != asio::error::would_block) { // end of file (or a reset): done
                close(c);
            } else {
                waitReadable(c);
            }
            return;
        }
        const size_t room = kHttpMaxRequestHead - c->bytes.size();
        error_code ec;
        const size_t n = c->socket.read_some(asio::buffer(buffer.data(), room), ec);
        if (ec == asio::error::would_block) {
            waitReadable(c);
            return;
        }
        if (ec) { // the client closed or reset before its request was whole
            close(c);
            return;
        }
        const size_t searched = c->bytes.size();
        c->bytes.append(buffer.data(), n);
        // Empty lines before the request line are ignored (RFC 9112, 2.2).
        const size_t empty = std::min(c->bytes.find_first_not_of("\r\n"), c->bytes.size());
        c->bytes.erase(0, empty);
        // An empty line may begin up to two bytes before what was searched.
        const size_t from = searched > empty + 2 ? searched - empty - 2 : 0;
        const size_t end = headEnd(c->bytes, from);
        if (end != std::string::npos) {
            c->bytes.resize(end);
            respond(c, httpAnswer(c->bytes, body));
        } else if (c->bytes.size() >= kHttpMaxRequestHead) {
            respond(c, error("431 Request Header Fields Too Large", true));
        } else {
            waitReadable(c);
        }
    }

    void respond(const ConnectionPtr& c, std::string answer) {
        c->state = Connection::State::Writing;
        c->bytes = std::move(answer);
        asio::async_write(c->socket, asio::buffer(c->bytes),
                          [this, c](const error_code& ec, size_t) {
                              if (!c->open) {
                                  return;
                              }
                              if (ec) {
                                  close(c);
                                  return;
                              }
                              c->state = Connection::State::Lingering;
                              std::string().swap(c->bytes);
                              error_code e;
                              (void)c->socket.shutdown(tcp::socket::shutdown_send, e);
                              c->timer.expires_after(kHttpLingerTime);
                              c->timer.async_wait([this, c](const error_code& te) {
                                  if (!te) {
                                      close(c);
                                  }
                              });
                              readable(c);
                          });
    }

    void run(std::promise<void>& named) {
        core::nameThisThread("svad-metrics");
        named.set_value();
        for (;;) {
            try {
                io.run();
                return;
            } catch (const std::exception& e) {
                log::warning("metrics: endpoint error", {{"ERROR", e.what()}});
            }
        }
    }

    // Ends the thread, then closes every socket (nothing runs the handlers any more).
    void stop() {
        io.stop();
        if (thread.joinable()) {
            thread.join();
        }
        error_code ec;
        (void)acceptor.close(ec);
        acceptRetry.cancel();
        while (!connections.empty()) {
            close(connections.front());
        }
    }

    asio::io_context io{1};
    tcp::acceptor acceptor{io};
    asio::steady_timer acceptRetry{io};
    Body body;
    uint16_t port = 0;
    // Oldest first.
    std::list<ConnectionPtr> connections;
    std::array<char, kHttpMaxRequestHead> buffer{};
    std::thread thread;
};

HttpEndpoint::HttpEndpoint(const core::ListenAddress& address, Body body)
    : impl_(std::make_unique<Impl>(address, std::move(body))) {
    impl_->accept();
    // Returns once the thread has its name, so that whoever lists svad's threads
    // after serve() sees it named.
    std::promise<void> named;
    std::future<void> ready = named.get_future();
    impl_->thread =
        std::thread([impl = impl_.get(), named = std::move(named)]() mutable { impl->run(named); });
    ready.wait();
}

HttpEndpoint::~HttpEndpoint() {
    try {
        impl_->stop();
    } catch (...) { // a failed join or timer cancel: nothing is left to do
    }
}

uint16_t HttpEndpoint::port() const {
    return impl_->port;
}

} // namespace svad::metrics
