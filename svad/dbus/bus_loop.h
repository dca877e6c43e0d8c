// Drives an sdbus-c++ connection from a Boost.Asio io_context: the bus fd
// (and sdbus-c++'s event fd, where it has one) and sd-bus's timeout become
// Asio descriptor waits and a timer, and every
// sdbus-c++ call happens on the io_context's thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <sdbus-c++/IConnection.h>
#include <sdbus-c++/IProxy.h>
#include <string>

namespace svad::dbus {

class BusLoop {
public:
    BusLoop(boost::asio::io_context& io, sdbus::IConnection& connection);
    ~BusLoop();
    BusLoop(const BusLoop&) = delete;
    BusLoop& operator=(const BusLoop&) = delete;

    // Dispatches what is pending and waits for more. Call once after set-up.
    void start();
    // After sdbus-c++ calls made outside a dispatch (signals emitted from a
    // timer, replies sent later): re-reads the poll data on the next turn.
    void kick();
    // Stops waiting; the connection is left as it is.
    void stop();
    // Called once, on the loop, when the connection fails (the bus went away
    // or dropped svad): the loop has stopped and `why` says what sd-bus saw.
    void setOnLost(std::function<void(const std::string& why)> onLost);
    // A round trip through the bus: Peer.Ping to svad's own unique name,
    // which this loop must dispatch before the reply can come back. `done`
    // gets true on the reply, false on an error or sd-bus's call timeout.
    void ping(std::function<void(bool answered)> done);

private:
    void dispatch();
    void arm();
    void lost(const std::string& why);

    boost::asio::io_context& io_;
    sdbus::IConnection& connection_;
    boost::asio::posix::stream_descriptor descriptor_;
    // sdbus-c++ 2.x's event fd (wakes the loop for queued messages); none on 1.x.
    std::optional<boost::asio::posix::stream_descriptor> eventFd_;
    boost::asio::steady_timer timer_;
    uint64_t generation_ = 0;
    bool kicked_ = false;
    bool stopped_ = false;
    std::function<void(const std::string&)> onLost_;
    std::unique_ptr<sdbus::IProxy> self_;
};

} // namespace svad::dbus
