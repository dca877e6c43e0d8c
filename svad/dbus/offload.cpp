#include "svad/dbus/offload.h"

#include "svad/core/log.h"
#include "svad/dbus/thread_pool_names.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <exception>

namespace svad::dbus {

AsioOffload::AsioOffload(boost::asio::io_context& io, unsigned threads)
    : io_(io), pool_(std::max(threads, 1U)) {
    nameThreads(pool_, std::max(threads, 1U), "svad-work");
}

AsioOffload::~AsioOffload() {
    alive_.reset();
    pool_.join();
}

void AsioOffload::run(std::function<void()> work, std::function<void()> then) {
    std::weak_ptr<int> alive = alive_;
    boost::asio::post(pool_, [this, alive, work = std::move(work), then = std::move(then)]() {
        try {
            work();
        } catch (const std::exception& e) {
            // The engine's work catches what it expects; anything else is a bug, said loudly.
            log::error(std::string("a worker's task failed: ") + e.what());
        }
        if (alive.expired()) {
            return;
        }
        boost::asio::post(io_, [alive, then] {
            if (alive.lock()) {
                then();
            }
        });
    });
}

} // namespace svad::dbus
