// Drives an sdbus-c++ connection from a Boost.Asio io_context: the bus fd
// and sd-bus's timeout become an Asio descriptor wait and a timer, and every
// sdbus-c++ call happens on the io_context's thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <sdbus-c++/IConnection.h>

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

private:
    void dispatch();
    void arm();

    boost::asio::io_context& io_;
    sdbus::IConnection& connection_;
    boost::asio::posix::stream_descriptor descriptor_;
    boost::asio::steady_timer timer_;
    uint64_t generation_ = 0;
    bool kicked_ = false;
    bool stopped_ = false;
};

} // namespace svad::dbus
