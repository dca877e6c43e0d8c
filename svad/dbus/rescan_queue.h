// Rescans, coalesced: one scan runs at a time, on a worker. A caller that asks
// while one is in flight is answered after the next one, which may then start
// (the scan in flight may have read the tree before the change it wants to
// see); every caller waiting for that next scan shares it.
#pragma once

#include "svad/core/model.h"
#include "svad/dbus/host_publisher.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace svad::dbus {

class RescanQueue {
public:
    // `error` is set when the scan failed (the old host stays).
    using ScanDone = std::function<void(const std::optional<std::string>& error)>;
    // Runs discovery on the worker, and prepares what it found for the loop:
    // must touch nothing shared but what prepare reads.
    using Scan = std::function<ReadyHost()>;
    // Publishes a scanned host, on the loop.
    using Apply = std::function<void(ReadyHost)>;

    RescanQueue(boost::asio::io_context& io, Scan scan, Apply apply);
    ~RescanQueue();
    RescanQueue(const RescanQueue&) = delete;
    RescanQueue& operator=(const RescanQueue&) = delete;

    void request(ScanDone done = {});
    // A partial re-read (hotplug) was published: a scan in flight may predate it.
    void refreshed();
    // svad is stopping: every waiting caller gets an error now.
    void stopping();
    bool scanning() const { return scanning_; }

private:
    void start();
    void finished(std::optional<ReadyHost> host, const std::string& error);

    boost::asio::io_context& io_;
    Scan scan_;
    Apply apply_;
    boost::asio::thread_pool worker_{1};
    bool scanning_ = false;
    bool nextRequested_ = false;
    std::vector<ScanDone> waitingCurrent_;
    std::vector<ScanDone> waitingNext_;
    // Expires with the queue, so that a scan finishing late is dropped.
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
