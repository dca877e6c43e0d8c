// svad's metrics endpoint: a small HTTP/1.x server on Boost.Asio that answers
// GET and HEAD /metrics with a body made on demand, on a thread of its own
// ("svad-metrics", with its own io_context), so that HTTP never waits on
// svad's D-Bus loop, nor the loop on HTTP.
//
// Every connection is asynchronous: a client that sends nothing, or one byte
// now and then, costs svad a socket and a small record, never a thread. The
// endpoint holds at most kHttpMaxConnections client sockets; a connection
// arriving at that bound makes room by closing the connection open longest
// that has no answer under way, so that a flood of idle or slow clients evicts
// only itself and a scraper, whose request comes with its connection, is
// answered in the time of one read and one write.
#pragma once

#include "svad/core/listen_address.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace svad::metrics {

// The client sockets the endpoint holds at most. A scrape needs one for a few
// ms; the rest of the bound is room for clients that are slow to send their
// request before eviction reaches them. A connection is evicted once this many
// newer ones arrived, so a scraper's request (sent with its connection) is read
// long before; 64 sockets are a small share of svad's open-files limit.
inline constexpr size_t kHttpMaxConnections = 64;
// The largest request head (request line and header fields) read; a longer one
// is answered 431 and the connection closed.
inline constexpr size_t kHttpMaxRequestHead = 8192;
// From its acceptance, a connection has this long to send its request head and
// take its answer; then it is closed.
inline constexpr std::chrono::seconds kHttpRequestDeadline{10};
// After the answer, the endpoint reads what the client still sends until it
// closes, for at most this long, so that unread bytes do not turn the close
// into a reset that could discard the answer at the client.
inline constexpr std::chrono::milliseconds kHttpLingerTime{1000};
// Connections the kernel completes before the endpoint accepts them (capped by
// net.core.somaxconn); they cost kernel memory, not svad's fds, and a burst
// beyond it makes the clients retry their SYN.
inline constexpr int kHttpListenBacklog = 1024;

// The answer to a complete request head (the bytes up to and with its empty
// line): status line, Content-Type, Content-Length, Connection: close and, for
// a GET of /metrics, the body `body()` returns. A bad request line or header
// field name, an HTTP/1.1 request without Host, or two Host fields: 400; an HTTP
// version other than 1.x: 505; a path other than /metrics: 404; a method other
// than GET and HEAD: 405 with Allow. `body` is called only for GET and HEAD of
// /metrics; if it throws, 500.
std::string httpAnswer(std::string_view head, const std::function<std::string()>& body);

class HttpEndpoint {
public:
    using Body = std::function<std::string()>;

    // Listens on `address` (not "off") and serves on a thread of its own;
    // throws std::runtime_error when the address cannot be bound. `body` is
    // called on that thread.
    HttpEndpoint(const core::ListenAddress& address, Body body);
    // Stops at once: the thread ends, every connection is closed.
    ~HttpEndpoint();
    HttpEndpoint(const HttpEndpoint&) = delete;
    HttpEndpoint& operator=(const HttpEndpoint&) = delete;

    // The port listened on (the one picked when the address said 0).
    uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace svad::metrics
