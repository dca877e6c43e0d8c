#include "svad/dbus/rescan_queue.h"

#include "svad/core/log.h"
#include "svad/dbus/thread_pool_names.h"

#include <boost/asio/post.hpp>
#include <iterator>

namespace svad::dbus {

RescanQueue::RescanQueue(boost::asio::io_context& io, Scan scan, Apply apply)
    : io_(io), scan_(std::move(scan)), apply_(std::move(apply)) {
    nameThreads(worker_, 1, "svad-rescan");
}

RescanQueue::~RescanQueue() {
    alive_.reset();
    worker_.join();
}

void RescanQueue::request(ScanDone done) {
    if (!scanning_) {
        if (done) {
            waitingCurrent_.push_back(std::move(done));
        }
        start();
        return;
    }
    nextRequested_ = true;
    if (done) {
        waitingNext_.push_back(std::move(done));
    }
}

void RescanQueue::refreshed() {
    if (scanning_) {
        nextRequested_ = true;
    }
}

void RescanQueue::start() {
    scanning_ = true;
    std::weak_ptr<int> alive = alive_;
    boost::asio::post(worker_, [this, alive] {
        std::optional<ReadyHost> host;
        std::string error;
        try {
            host = scan_();
        } catch (const std::exception& e) {
            error = e.what();
        }
        boost::asio::post(io_, [this, alive, host = std::move(host), error]() mutable {
            if (alive.lock()) {
                finished(std::move(host), error);
            }
        });
    });
}

void RescanQueue::finished(std::optional<ReadyHost> host, const std::string& error) {
    scanning_ = false;
    std::optional<std::string> failure;
    if (host) {
        apply_(std::move(*host));
    } else {
        failure = "rescan failed, the previous host stays published: " + error;
        log::error(*failure);
    }
    auto done = std::move(waitingCurrent_);
    waitingCurrent_.clear();
    if (nextRequested_) {
        nextRequested_ = false;
        waitingCurrent_ = std::move(waitingNext_);
        waitingNext_.clear();
        start();
    }
    for (auto& d : done) {
        d(failure);
    }
}

void RescanQueue::stopping() {
    auto waiting = std::move(waitingCurrent_);
    waiting.insert(waiting.end(), std::make_move_iterator(waitingNext_.begin()),
                   std::make_move_iterator(waitingNext_.end()));
    waitingCurrent_.clear();
    waitingNext_.clear();
    nextRequested_ = false;
    for (auto& done : waiting) {
        done(std::string("svad is stopping: the rescan was not finished"));
    }
}

} // namespace svad::dbus
