// Who is calling: the caller's uid, pid and groups, asked of the bus daemon
// (GetConnectionCredentials), never taken from what the caller sends nor from
// /proc, where a recycled pid could answer for another. Each client is asked
// once; the answer is dropped when the client leaves the bus. The question
// goes out asynchronously, and a lookup in the user database (NSS, which may
// be a network directory) runs on a worker: the loop never waits for either.
//
// Authorization: admin() lets root and members of the configured admin group
// through; other callers get PermissionDenied, and their refusals go to the
// log at a bounded rate per uid.
#pragma once

#include "svad/core/admission.h"
#include "svad/core/config.h"
#include "svad/core/outcome.h"
#include "svad/core/rate_limit.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <map>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::dbus {

class CallerIdentity {
public:
    using Done = std::function<void(core::Outcome<core::Caller>)>;

    // `bus` is a proxy of org.freedesktop.DBus on svad's connection.
    CallerIdentity(boost::asio::io_context& io, sdbus::IProxy& bus);
    ~CallerIdentity();
    CallerIdentity(const CallerIdentity&) = delete;
    CallerIdentity& operator=(const CallerIdentity&) = delete;

    // Calls `done` on the loop with the caller behind `sender` (at once when known).
    void resolve(const std::string& sender, Done done);
    // As resolve, then PermissionDenied unless the caller is root or in the admin group
    // of `config` (read when the answer is there).
    void admin(const std::string& action, const std::string& sender,
               std::function<const core::Config&()> config, Done done);
    // The client left the bus: its credentials go.
    void forget(const std::string& sender) { known_.erase(sender); }
    size_t knownCount() const { return known_.size(); }

    // Refusals of anyone on the bus go to the log through this, at a bounded rate per key.
    core::RateLimit& refusalLog() { return refusalLog_; }

private:
    struct Credentials {
        uid_t uid = 0;
        pid_t pid = 0;
        std::vector<gid_t> gids;
    };
    void finish(const std::string& sender, Credentials cr);

    boost::asio::io_context& io_;
    sdbus::IProxy& bus_;
    boost::asio::thread_pool nss_{1};
    std::map<std::string, Credentials> known_;
    // Callers waiting for the same sender's answer.
    std::map<std::string, std::vector<Done>> waiting_;
    core::RateLimit refusalLog_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

} // namespace svad::dbus
