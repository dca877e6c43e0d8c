// Names every thread of an Asio thread_pool (see svad/core/thread_name.h).
// Each thread takes one naming task, and none of them returns before all
// have, so no thread takes two; the caller waits until all are named.
#pragma once

#include "svad/core/thread_name.h"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstddef>
#include <latch>
#include <memory>
#include <string>
#include <string_view>

namespace svad::dbus {

inline void nameThreads(boost::asio::thread_pool& pool, unsigned threads, std::string_view name) {
    // Shared: a task may still be leaving arrive_and_wait when the caller's wait returns.
    auto all = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(threads));
    for (unsigned i = 0; i < threads; ++i) {
        boost::asio::post(pool, [all, name = std::string(name)] {
            core::nameThisThread(name);
            all->arrive_and_wait();
        });
    }
    all->wait();
}

} // namespace svad::dbus
