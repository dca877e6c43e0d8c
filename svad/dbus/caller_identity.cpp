#include "svad/dbus/caller_identity.h"

#include "svad/core/log.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/dbus/thread_pool_names.h"
#include "svad/names.h"

#include <boost/asio/post.hpp>
#include <chrono>
#include <grp.h>
#include <pwd.h>

namespace svad::dbus {

namespace {

// The groups of a uid in the user database (primary first); a uid without an
// entry has no groups.
std::vector<gid_t> groupsOfUser(uid_t uid) {
    std::vector<gid_t> out;
    struct passwd pw {};
    struct passwd* result = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &result) != 0 || result == nullptr) {
        return out;
    }
    int n = 64;
    std::vector<gid_t> groups(static_cast<size_t>(n));
    if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
        groups.resize(static_cast<size_t>(n));
        if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
            return {pw.pw_gid};
        }
    }
    groups.resize(static_cast<size_t>(n));
    return groups;
}

core::Caller callerOf(const std::string& sender, uid_t uid, pid_t pid,
                      const std::vector<gid_t>& gids) {
    core::Caller c;
    c.busName = sender;
    c.uid = uid;
    c.pid = pid;
    c.gids = gids;
    return c;
}

} // namespace

CallerIdentity::CallerIdentity(boost::asio::io_context& io, sdbus::IProxy& bus)
    : io_(io), bus_(bus) {
    nameThreads(nss_, 1, "svad-nss");
}

CallerIdentity::~CallerIdentity() {
    alive_.reset();
    nss_.join();
}

void CallerIdentity::resolve(const std::string& sender, Done done) {
    if (auto it = known_.find(sender); it != known_.end()) {
        done(callerOf(sender, it->second.uid, it->second.pid, it->second.gids));
        return;
    }
    auto& queue = waiting_[sender];
    queue.push_back(std::move(done));
    if (queue.size() > 1) {
        return; // the question is out already
    }
    std::weak_ptr<int> alive = alive_;
    auto refuse = [this, sender](const std::string& why) {
        auto waiting = std::move(waiting_[sender]);
        waiting_.erase(sender);
        for (auto& d : waiting) {
            d(core::Failure{names::Error::PermissionDenied, why, {}});
        }
    };
    try {
        bus_.callMethodAsync("GetConnectionCredentials")
            .onInterface("org.freedesktop.DBus")
            .withArguments(sender)
            .uponReplyInvoke([this, alive, sender,
                              refuse](compat::AsyncError error,
                                      const std::map<std::string, sdbus::Variant>& creds) {
                if (!alive.lock()) {
                    return;
                }
                auto uid = creds.find("UnixUserID");
                if (error || uid == creds.end() || !uid->second.containsValueOfType<uint32_t>()) {
                    refuse("the bus did not tell who " + sender + " is");
                    return;
                }
                Credentials cr;
                cr.uid = uid->second.get<uint32_t>();
                auto pid = creds.find("ProcessID");
                cr.pid = pid != creds.end() && pid->second.containsValueOfType<uint32_t>()
                             ? static_cast<pid_t>(pid->second.get<uint32_t>())
                             : 0;
                // Groups as the bus saw them when it has them, else the uid's groups in the
                // user database (both name the uid the bus vouches for).
                auto gids = creds.find("UnixGroupIDs");
                if (gids != creds.end() &&
                    gids->second.containsValueOfType<std::vector<uint32_t>>()) {
                    for (uint32_t g : gids->second.get<std::vector<uint32_t>>()) {
                        cr.gids.push_back(static_cast<gid_t>(g));
                    }
                    finish(sender, std::move(cr));
                    return;
                }
                boost::asio::post(nss_, [this, alive, sender, cr]() mutable {
                    cr.gids = groupsOfUser(cr.uid);
                    boost::asio::post(io_, [this, alive, sender, cr = std::move(cr)]() mutable {
                        if (alive.lock()) {
                            finish(sender, std::move(cr));
                        }
                    });
                });
            });
    } catch (const sdbus::Error& e) {
        refuse("cannot ask the bus who " + sender + " is: " + e.getMessage());
    }
}

void CallerIdentity::finish(const std::string& sender, Credentials cr) {
    auto waiting = std::move(waiting_[sender]);
    waiting_.erase(sender);
    const core::Caller c = callerOf(sender, cr.uid, cr.pid, cr.gids);
    known_.insert_or_assign(sender, std::move(cr));
    for (auto& d : waiting) {
        d(c);
    }
}

void CallerIdentity::admin(const std::string& action, const std::string& sender,
                           std::function<const core::Config&()> config, Done done) {
    resolve(sender, [this, action, config = std::move(config),
                     done = std::move(done)](core::Outcome<core::Caller> who) mutable {
        if (!who.ok()) {
            done(who.failure());
            return;
        }
        const core::Caller& c = who.value();
        const core::Config& cfg = config();
        if (cfg.isAdmin(c.uid, c.gids)) {
            done(std::move(who));
            return;
        }
        const std::string allowed = cfg.adminGroup.empty()
                                        ? std::string("root only (no admin_group is configured)")
                                        : "root and members of group " + cfg.adminGroup;
        // Anyone on the bus may call (the bus policy aside): the record of each refusal is
        // rate-limited per uid, and the next one says what was held back.
        if (auto v = refusalLog_.admit(c.uid, std::chrono::steady_clock::now()); v.log) {
            log::Fields fields = {{"VERDICT", "DENY"},
                                  {"PLUGIN", "authorization"},
                                  {"REASON", "not root and not in the admin group"},
                                  {"CALLER_UID", std::to_string(c.uid)},
                                  {"CALLER_PID", std::to_string(c.pid)}};
            if (v.suppressed > 0) {
                fields.emplace_back("SUPPRESSED", std::to_string(v.suppressed));
            }
            log::notice("refused " + action + " to uid " + std::to_string(c.uid) + ": not an admin",
                        fields);
        }
        done(core::Failure{names::Error::PermissionDenied,
                           action + " is for " + allowed + "; uid " + std::to_string(c.uid) +
                               " is neither",
                           {}});
    });
}

} // namespace svad::dbus
