#include "svad/dbus/bus_loop.h"

#include "svad/dbus/sdbus_compat.h"

#include <boost/asio/post.hpp>
#include <chrono>
#include <fcntl.h>
#include <poll.h>
#include <sdbus-c++/Error.h>
#include <system_error>
#include <time.h>
#include <unistd.h>

namespace svad::dbus {

namespace {

int dupFd(int fd) {
    int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
        throw std::system_error(errno, std::generic_category(), "cannot duplicate the bus fd");
    }
    return copy;
}

uint64_t monotonicNowUsec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

} // namespace

// The descriptors own duplicates of the bus fd and the event fd, so that closing
// them never closes sdbus-c++'s own; epoll reports readiness of the shared file
// either way.
BusLoop::BusLoop(boost::asio::io_context& io, sdbus::IConnection& connection)
    : io_(io), connection_(connection), descriptor_(io, dupFd(compat::pollData(connection).fd)),
      timer_(io) {
    const int eventFd = compat::pollData(connection).eventFd;
    if (eventFd >= 0) {
        eventFd_.emplace(io, dupFd(eventFd));
    }
}

BusLoop::~BusLoop() {
    try {
        stop();
    } catch (const std::exception&) {
        // Cancelling waits on the way out: nothing is left to tell.
    }
}

void BusLoop::start() {
    stopped_ = false;
    dispatch();
}

void BusLoop::stop() {
    stopped_ = true;
    ++generation_;
    boost::system::error_code ec;
    descriptor_.cancel(ec);
    if (eventFd_) {
        eventFd_->cancel(ec);
    }
    timer_.cancel();
}

void BusLoop::kick() {
    if (kicked_ || stopped_) {
        return;
    }
    kicked_ = true;
    boost::asio::post(io_, [this] {
        kicked_ = false;
        if (!stopped_) {
            dispatch();
        }
    });
}

void BusLoop::setOnLost(std::function<void(const std::string& why)> onLost) {
    onLost_ = std::move(onLost);
}

void BusLoop::ping(std::function<void(bool answered)> done) {
    try {
        if (!self_) {
            self_ = compat::makeProxy(connection_, connection_.getUniqueName(), "/");
        }
        self_->callMethodAsync("Ping")
            .onInterface("org.freedesktop.DBus.Peer")
            .uponReplyInvoke([done = std::move(done)](compat::AsyncError error) { done(!error); });
    } catch (const sdbus::Error& e) {
        lost(e.getMessage());
        return;
    }
    kick();
}

void BusLoop::lost(const std::string& why) {
    if (stopped_) {
        return;
    }
    stop();
    if (onLost_) {
        onLost_(why);
    }
}

void BusLoop::dispatch() {
    // A bounded batch per turn, so that a stream of calls cannot starve the
    // signals, the leases and the watchdog that share the loop.
    constexpr int kBatch = 64;
    try {
        for (int i = 0; i < kBatch; ++i) {
            if (!compat::processPending(connection_)) {
                arm();
                return;
            }
        }
    } catch (const sdbus::Error& e) {
        lost(e.getMessage());
        return;
    }
    arm();
    kick();
}

void BusLoop::arm() {
    if (stopped_) {
        return;
    }
    compat::PollData poll;
    try {
        poll = compat::pollData(connection_);
    } catch (const sdbus::Error& e) {
        lost(e.getMessage());
        return;
    }
    const uint64_t gen = ++generation_;
    boost::system::error_code ec;
    descriptor_.cancel(ec);
    if (eventFd_) {
        eventFd_->cancel(ec);
    }
    timer_.cancel();

    auto onReady = [this, gen](const boost::system::error_code& error) {
        if (!error && gen == generation_ && !stopped_) {
            dispatch();
        }
    };
    if ((poll.events & POLLIN) != 0) {
        descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_read, onReady);
    }
    if ((poll.events & POLLOUT) != 0) {
        descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_write, onReady);
    }
    if (eventFd_) {
        eventFd_->async_wait(boost::asio::posix::stream_descriptor::wait_read, onReady);
    }
    if (poll.timeoutUsec != UINT64_MAX) {
        const uint64_t now = monotonicNowUsec();
        const uint64_t wait = poll.timeoutUsec > now ? poll.timeoutUsec - now : 0;
        timer_.expires_after(std::chrono::microseconds(wait));
        timer_.async_wait(onReady);
    }
}

} // namespace svad::dbus
