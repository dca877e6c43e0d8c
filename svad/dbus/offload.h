// The engine's Offload over Asio: work runs on a small pool of workers, its
// continuation back on svad's loop (the io_context). Also runs svad's other
// slow parts off the loop (user database lookups).
#pragma once

#include "svad/core/engine.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>

namespace svad::dbus {

class AsioOffload final : public core::Offload {
public:
    // `threads` bounds how many slow calls (a driver rebind, a device reset) run
    // at once; the loop is never one of them.
    AsioOffload(boost::asio::io_context& io, unsigned threads);
    // Waits for the work under way; continuations not yet run are dropped.
    ~AsioOffload() override;
    AsioOffload(const AsioOffload&) = delete;
    AsioOffload& operator=(const AsioOffload&) = delete;

    void run(std::function<void()> work, std::function<void()> then) override;

private:
    boost::asio::io_context& io_;
    boost::asio::thread_pool pool_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
