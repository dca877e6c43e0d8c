#include "svad/dbus/context_methods.h"

#include "svad/core/log.h"
#include "svad/core/text.h"
#include "svad/dbus/clock.h"
#include "svad/dbus/errors.h"
#include "svad/dbus/request_options.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <cerrno>
#include <set>
#include <system_error>
#include <systemd/sd-bus.h>

namespace svad::dbus {

namespace {

std::string joined(const std::vector<std::string>& items, const char* sep = ",") {
    std::string out;
    for (const auto& i : items) {
        out += (out.empty() ? "" : sep) + i;
    }
    return out;
}

// A caller's list of names as a log field quotes it: each name echoed, and as
// many as fit in 256 bytes, then how many there were.
std::string echoList(const std::vector<std::string>& items) {
    constexpr size_t kMaxListEcho = 256;
    std::string out;
    size_t shown = 0;
    for (const auto& i : items) {
        std::string next = (out.empty() ? "" : ",") + core::echo(i);
        if (out.size() + next.size() > kMaxListEcho) {
            break;
        }
        out += next;
        ++shown;
    }
    if (shown < items.size()) {
        out += ",\u2026 (" + std::to_string(items.size()) + " names)";
    }
    return out;
}

// One audit line for a refused allocation or reservation.
void logRefusal(const char* what, const std::string& vm, const std::vector<std::string>& devices,
                const core::Failure& f, const core::Caller& caller) {
    log::warning(std::string(what) + " refused: " + f.message,
                 {{"VM", core::echo(vm)},
                  {"DEVICE", echoList(devices)},
                  {"VERDICT", "DENY"},
                  {"ERROR", std::string(names::errorInfo(f.error).dbusName)},
                  {"REASON", f.message},
                  {"CALLER_UID", std::to_string(caller.uid)},
                  {"CALLER_PID", std::to_string(caller.pid)}});
}

void replyError(sdbus::MethodCall& call, const sdbus::Error& error) {
    try {
        call.createErrorReply(error).send();
    } catch (const sdbus::Error& e) {
        log::warning(std::string("cannot send an error reply: ") + e.what());
    }
}

} // namespace

ContextMethods::ContextMethods(boost::asio::io_context& io, sdbus::IConnection& connection,
                               sdbus::IProxy& bus, core::Engine& engine, CallerIdentity& identity,
                               HostPublisher& host, ServiceMetrics& metrics, Hooks hooks)
    : connection_(connection), bus_(bus), engine_(engine), identity_(identity), host_(host),
      metrics_(metrics), hooks_(std::move(hooks)),
      objects_(compat::rawBus(connection), names::kContextPrefix), deliveryCheck_(io) {
    engine_.addObserver(this);
    // The bus answers a message it refuses to pass on (a reply with fds to a connection
    // without fd passing) with an error to svad; onBusError picks out svad's replies.
    busErrors_ = compat::addMatch(connection_, "type='error',sender='org.freedesktop.DBus'",
                                  [this](sdbus::Message& m) { onBusError(m); });
}

ContextMethods::~ContextMethods() {
    alive_.reset(); // a delivery check's timer fires into nothing (its wait is cancelled too)
    engine_.removeObserver(this);
    busErrors_.reset();
    pendingReplies_.clear();
    // Contexts stay with the engine (their fds live on in the VMMs); only the bus
    // side (objects_) goes.
}

core::Outcome<uint64_t> ContextMethods::contextAt(const std::string& path) const {
    uint64_t id = contextIdOf(path);
    if (id == 0 || engine_.find(id) == nullptr) {
        return core::Failure{names::Error::NotFound, "no context at " + core::echo(path), {}};
    }
    return id;
}

void ContextMethods::asAdmin(const std::string& action, const std::string& sender,
                             std::function<void(const core::Failure&)> fail,
                             std::function<void(const core::Caller&)> then) {
    std::weak_ptr<int> alive = alive_;
    identity_.admin(
        action, sender, [this]() -> const core::Config& { return engine_.config(); },
        [alive, fail = std::move(fail), then = std::move(then),
         kick = hooks_.kick](core::Outcome<core::Caller> who) mutable {
            if (!alive.lock()) {
                return;
            }
            if (!who.ok()) {
                fail(who.failure());
            } else {
                then(who.value());
            }
            if (kick) {
                kick();
            }
        });
}

void ContextMethods::allocate(sdbus::MethodCall call, const std::string& sender, std::string vm,
                              std::vector<std::string> devices,
                              std::map<std::string, sdbus::Variant> options) {
    const auto started = std::chrono::steady_clock::now();
    auto held = std::make_shared<sdbus::MethodCall>(std::move(call));
    std::weak_ptr<int> alive = alive_;
    asAdmin(
        "AllocateContext", sender,
        [held](const core::Failure& f) { replyError(*held, busError(f)); },
        [this, alive, held, started, vm = std::move(vm), devices = std::move(devices),
         options = std::move(options)](const core::Caller& caller) {
            core::AllocateRequest req;
            req.vm = vm;
            req.devices = devices;
            req.caller = caller;
            try {
                decodeAllocateOptions(options, req);
            } catch (const sdbus::Error& e) {
                replyError(*held, e);
                return;
            }
            engine_.allocate(req, realtimeUsec(),
                             [this, alive, held, started, vm, devices,
                              caller](core::Outcome<const core::Context*> outcome) {
                                 if (!alive.lock()) {
                                     return;
                                 }
                                 if (outcome.ok()) {
                                     handOver(std::move(*held), *outcome.value(), started, caller);
                                 } else {
                                     const core::Failure& f = outcome.failure();
                                     logRefusal("allocation", vm, devices, f, caller);
                                     metrics_.allocation(started, f);
                                     replyError(*held, busError(f));
                                 }
                                 if (hooks_.kick) {
                                     hooks_.kick();
                                 }
                             });
        });
}

void ContextMethods::handOver(sdbus::MethodCall call, const core::Context& ctx,
                              std::chrono::steady_clock::time_point started,
                              const core::Caller& caller) {
    const uint64_t id = ctx.id;
    const bool hostChanged = ctx.hostChanged;
    std::set<std::string> used;
    std::vector<std::string> devices;
    std::vector<std::string> plugins;
    for (const auto& d : ctx.devices) {
        used.insert(d.plugin);
        devices.push_back(d.id);
        plugins.push_back(d.plugin);
    }
    uint64_t cookie = 0;
    try {
        // Duplicates for the reply: svad keeps its own copies.
        auto dupFd = [](int fd) {
            sdbus::UnixFd copy(fd);
            if (copy.get() < 0) {
                throw std::system_error(errno, std::generic_category(), "dup");
            }
            return copy;
        };
        sdbus::UnixFd iommufd = dupFd(ctx.iommufd.get());
        std::map<std::string, sdbus::UnixFd> fds;
        std::map<std::string, uint32_t> devIds;
        std::map<std::string, uint32_t> vdpaGroups;
        std::map<std::string, uint32_t> vdpaSpaces;
        std::map<std::string, uint32_t> pasidWidths;
        std::map<std::string, std::string> pluginOf;
        std::map<std::string, std::string> queueNodes;
        for (const auto& d : ctx.devices) {
            if (d.kind == core::HeldKind::Queue) {
                queueNodes[d.id] = d.node; // no fd: the client opens the node itself
            } else {
                fds.emplace(d.id, dupFd(d.fd.get()));
            }
            pasidWidths[d.id] = d.pasidWidth;
            pluginOf[d.id] = d.plugin;
            if (d.kind == core::HeldKind::Vfio && ctx.mode == core::ContextMode::Attached) {
                devIds[d.id] = d.devId;
            }
            if (d.kind == core::HeldKind::Vdpa) {
                vdpaGroups[d.id] = d.vdpaGroups;
                vdpaSpaces[d.id] = d.vdpaAddressSpaces;
            }
        }
        std::map<std::string, sdbus::Variant> info;
        info["mode"] = sdbus::Variant(std::string(core::contextModeName(ctx.mode)));
        info["pasid_widths"] = sdbus::Variant(pasidWidths);
        info["plugins"] = sdbus::Variant(pluginOf);
        if (ctx.mode == core::ContextMode::Attached) {
            info["ioas_id"] = sdbus::Variant(ctx.ioasId);
            info["dev_ids"] = sdbus::Variant(devIds);
            std::vector<sdbus::Struct<uint64_t, uint64_t>> ranges;
            for (const auto& r : ctx.iovaRanges) {
                ranges.emplace_back(r.start, r.last);
            }
            info["iova_ranges"] = sdbus::Variant(ranges);
        }
        if (!queueNodes.empty()) {
            info["queue_nodes"] = sdbus::Variant(queueNodes);
        }
        if (!vdpaGroups.empty()) {
            info["vdpa_groups"] = sdbus::Variant(vdpaGroups);
            info["vdpa_address_spaces"] = sdbus::Variant(vdpaSpaces);
        }
        if (ctx.faultQueueFd.valid()) {
            info["fault_queue_id"] = sdbus::Variant(ctx.faultQueueId);
            info["fault_queue_fd"] = sdbus::Variant(dupFd(ctx.faultQueueFd.get()));
        }
        sdbus::MethodReply reply = call.createReply();
        reply << sdbus::ObjectPath(contextPath(id)) << iommufd << fds << info;
        reply.send();
        (void)sd_bus_message_get_cookie(compat::rawMessage(reply), &cookie);
    } catch (const std::exception& e) {
        // The context exists in the engine: one release takes it back, and the
        // InterfacesAdded that went out gets its InterfacesRemoved.
        metrics_.allocation(started, core::Failure{names::Error::KernelError, e.what(), {}});
        log::error(std::string("context taken back, it could not be handed over: ") + e.what(),
                   {{"VM", ctx.vm}, {"CONTEXT", std::to_string(id)}});
        std::optional<sdbus::Error> answer;
        if (const auto* busErr = dynamic_cast<const sdbus::Error*>(&e)) {
            answer = *busErr;
        } else {
            answer = busError(names::Error::KernelError,
                              std::string("cannot hand over the context: ") + e.what());
        }
        // Answered once the context is gone again and its devices are free.
        auto held = std::make_shared<sdbus::MethodCall>(std::move(call));
        engine_.releaseAsync(id, "it could not be handed over",
                             [held, answer = *answer, kick = hooks_.kick] {
                                 replyError(*held, answer);
                                 if (kick) {
                                     kick();
                                 }
                             });
        return;
    }
    log::notice("context allocated", {{"VM", ctx.vm},
                                      {"CONTEXT", std::to_string(id)},
                                      {"DEVICE", joined(devices)},
                                      {"PLUGIN", joined(plugins)},
                                      {"MODE", core::contextModeName(ctx.mode)},
                                      {"VERDICT", "ALLOW"},
                                      {"CALLER_UID", std::to_string(caller.uid)},
                                      {"CALLER_PID", std::to_string(caller.pid)}});
    watchDelivery(id, cookie, std::move(call));
    if (hostChanged && hooks_.rescan) {
        hooks_.rescan(); // a plugin rebound drivers: publish what the host looks like now
    }
    metrics_.allocation(started, std::nullopt,
                        joined(std::vector<std::string>(used.begin(), used.end())));
}

void ContextMethods::watchDelivery(uint64_t id, uint64_t cookie, sdbus::MethodCall call) {
    if (cookie == 0) {
        return; // not sent: nothing to follow
    }
    pendingReplies_.insert_or_assign(cookie, PendingReply{id, std::move(call)});
    unchecked_.push_back(cookie);
    if (checkScheduled_) {
        return; // the next check covers this one too
    }
    // A refusal needs no check: the bus sends it as it handles the reply (onBusError).
    // The check only lets go of the replies it has passed on, so it waits a little
    // and covers every reply sent meanwhile: an allocation costs no extra round trip.
    constexpr auto kCheckDelay = std::chrono::milliseconds(100);
    checkScheduled_ = true;
    deliveryCheck_.expires_after(kCheckDelay);
    std::weak_ptr<int> alive = alive_;
    deliveryCheck_.async_wait([this, alive](const boost::system::error_code& ec) {
        if (ec || !alive.lock()) {
            return;
        }
        checkScheduled_ = false;
        checkDelivery();
        if (hooks_.kick) {
            hooks_.kick();
        }
    });
}

void ContextMethods::checkDelivery() {
    // The bus handles svad's messages in order, and sends its answers in order: once it
    // answers this call, it has passed on every reply sent before, or its refusal of one
    // was dispatched first.
    auto covered = std::make_shared<std::vector<uint64_t>>(std::move(unchecked_));
    unchecked_.clear();
    std::weak_ptr<int> alive = alive_;
    try {
        bus_.callMethodAsync("GetId")
            .onInterface("org.freedesktop.DBus")
            .uponReplyInvoke(
                [this, alive, covered](compat::AsyncError /*error*/, const std::string& /*busId*/) {
                    if (alive.lock()) {
                        for (uint64_t cookie : *covered) {
                            pendingReplies_.erase(cookie);
                        }
                    }
                });
    } catch (const sdbus::Error& e) {
        // The replies went out; only the watch is lost, and the entries with it.
        for (uint64_t cookie : *covered) {
            pendingReplies_.erase(cookie);
        }
        log::warning(std::string("cannot follow the delivery of contexts' replies: ") + e.what(),
                     {{"CONTEXTS", std::to_string(covered->size())}});
    }
}

void ContextMethods::onBusError(sdbus::Message& message) {
    uint64_t cookie = 0;
    if (sd_bus_message_get_reply_cookie(compat::rawMessage(message), &cookie) < 0) {
        return;
    }
    auto it = pendingReplies_.find(cookie);
    if (it == pendingReplies_.end()) {
        return;
    }
    PendingReply pending = std::move(it->second);
    pendingReplies_.erase(it);
    const sd_bus_error* error = sd_bus_message_get_error(compat::rawMessage(message));
    const std::string name = error != nullptr && error->name != nullptr ? error->name : "";
    const std::string why =
        error != nullptr && error->message != nullptr ? error->message : "refused by the bus";
    log::error("context taken back: the bus did not deliver the reply carrying its fds: " + why,
               {{"CONTEXT", std::to_string(pending.context)}, {"ERROR", name}});
    // The caller still waits for an answer: one without fds can reach it, once the
    // context is gone and its devices are free.
    auto call = std::make_shared<sdbus::MethodCall>(std::move(pending.call));
    engine_.releaseAsync(
        pending.context, "the reply carrying its fds could not be delivered",
        [call, why, kick = hooks_.kick] {
            replyError(*call, busError(names::Error::NotSupported,
                                       "the reply carries file descriptors and the bus would not "
                                       "deliver it (" +
                                           why +
                                           "); connect with unix fd passing; the context "
                                           "was released"));
            if (kick) {
                kick();
            }
        });
}

void ContextMethods::release(const std::shared_ptr<sdbus::Result<>>& result,
                             const std::string& sender, const std::string& context) {
    asAdmin(
        "ReleaseContext", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, context](const core::Caller& caller) {
            auto id = contextAt(context);
            if (!id.ok()) {
                result->returnError(busError(id.failure()));
                return;
            }
            if (auto access = engine_.checkAccess(id.value(), caller); !access.ok()) {
                result->returnError(busError(access.failure()));
                return;
            }
            // Answered once the context's kernel objects are gone: the caller may
            // take its devices again at once.
            engine_.releaseAsync(id.value(), "released by the owner", [result, kick = hooks_.kick] {
                result->returnResults();
                if (kick) {
                    kick();
                }
            });
        });
}

void ContextMethods::allocatePasid(const std::shared_ptr<sdbus::Result<uint32_t>>& result,
                                   const std::string& sender, const std::string& context,
                                   std::string device,
                                   std::map<std::string, sdbus::Variant> options) {
    decodePasidOptions(options);
    asAdmin(
        "AllocatePasid", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, context, device](const core::Caller& caller) {
            auto id = contextAt(context);
            if (!id.ok()) {
                result->returnError(busError(id.failure()));
                return;
            }
            auto outcome = engine_.allocatePasid(id.value(), device, caller);
            if (!outcome.ok()) {
                log::warning(
                    "PASID refused: " + outcome.failure().message,
                    {{"CONTEXT", std::to_string(id.value())}, {"DEVICE", core::echo(device)}});
                if (outcome.failure().error == names::Error::QuotaExceeded) {
                    metrics_.pasidQuotaRefusal();
                }
                result->returnError(busError(outcome.failure()));
                return;
            }
            const uint32_t pasid = outcome.value();
            (void)objects_.announce(contextPath(id.value()), "Pasids");
            metrics_.observe();
            log::info("PASID allocated", {{"CONTEXT", std::to_string(id.value())},
                                          {"DEVICE", device},
                                          {"PASID", std::to_string(pasid)}});
            result->returnResults(pasid);
        });
}

void ContextMethods::releasePasid(const std::shared_ptr<sdbus::Result<>>& result,
                                  const std::string& sender, const std::string& context,
                                  uint32_t pasid) {
    asAdmin(
        "ReleasePasid", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, context, pasid](const core::Caller& caller) {
            auto id = contextAt(context);
            if (!id.ok()) {
                result->returnError(busError(id.failure()));
                return;
            }
            auto outcome = engine_.releasePasid(id.value(), pasid, caller);
            if (!outcome.ok()) {
                result->returnError(busError(outcome.failure()));
                return;
            }
            (void)objects_.announce(contextPath(id.value()), "Pasids");
            metrics_.observe();
            log::info("PASID released",
                      {{"CONTEXT", std::to_string(id.value())}, {"PASID", std::to_string(pasid)}});
            result->returnResults();
        });
}

void ContextMethods::setVirtualId(const std::shared_ptr<sdbus::Result<>>& result,
                                  const std::string& sender, const std::string& context,
                                  const std::string& device, uint64_t virtId) {
    asAdmin(
        "SetVirtualId", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, context, device, virtId](const core::Caller& caller) {
            auto id = contextAt(context);
            if (!id.ok()) {
                result->returnError(busError(id.failure()));
                return;
            }
            auto outcome = engine_.setVirtualId(id.value(), device, virtId, caller);
            if (!outcome.ok()) {
                result->returnError(busError(outcome.failure()));
                return;
            }
            (void)objects_.announce(contextPath(id.value()), "VirtualIds");
            result->returnResults();
        });
}

// ---- VM-lifetime reservations ------------------------------------------------

core::Outcome<uid_t> ContextMethods::ownerUidOf(const std::string& what, uint32_t pid) const {
    if (pid == 0 || pid > INT32_MAX) {
        return core::Failure{names::Error::InvalidArgument, what + " is not a pid", {}};
    }
    std::optional<uid_t> uid;
    if (hooks_.processUid) {
        uid = hooks_.processUid(static_cast<pid_t>(pid));
    }
    if (!uid) {
        return core::Failure{names::Error::InvalidArgument,
                             what + ": there is no process " + std::to_string(pid),
                             {}};
    }
    return *uid;
}

std::map<std::string, sdbus::Variant>
ContextMethods::reservationInfo(const core::Context& ctx) const {
    const core::HostIndex& host = engine_.hostIndex();
    const std::string& root = host_.devRoot();
    std::map<std::string, std::string> nodes;
    std::map<std::string, uint32_t> groups;
    std::map<std::string, uint32_t> pasidWidths;
    std::map<std::string, std::string> pluginOf;
    for (const auto& d : ctx.devices) {
        pasidWidths[d.id] = d.pasidWidth;
        pluginOf[d.id] = d.plugin;
        std::string node;
        if (d.kind == core::HeldKind::Vfio) {
            if (const core::PciDevice* pci = host.pci(d.id)) {
                // An auto-bound function has its cdev once the rescan after the rebind is in.
                if (!pci->vfioDevice.empty()) {
                    node = underRoot(root, "vfio/devices/" + pci->vfioDevice);
                }
                if (pci->group) {
                    groups[d.id] = *pci->group;
                }
            }
        } else if (d.kind == core::HeldKind::Vdpa) {
            if (const core::VdpaDevice* v = host.vdpa(d.id)) {
                node = underRoot(root, v->vhostDevice);
            }
        } else if (const core::SiovQueue* q = host.queue(d.id)) {
            node = underRoot(root, q->charDevice);
        }
        if (!node.empty()) {
            nodes[d.id] = node;
        }
    }
    std::map<std::string, sdbus::Variant> info;
    info["mode"] = sdbus::Variant(std::string(core::contextModeName(ctx.mode)));
    info["pasid_widths"] = sdbus::Variant(pasidWidths);
    info["plugins"] = sdbus::Variant(pluginOf);
    info["nodes"] = sdbus::Variant(nodes);
    info["iommu_groups"] = sdbus::Variant(groups);
    return info;
}

void ContextMethods::reserve(const std::shared_ptr<ReserveResult>& result,
                             const std::string& sender, std::string vm,
                             std::vector<std::string> devices,
                             std::map<std::string, sdbus::Variant> options) {
    const auto started = std::chrono::steady_clock::now();
    std::weak_ptr<int> alive = alive_;
    asAdmin(
        "ReserveDevices", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, alive, result, started, vm = std::move(vm), devices = std::move(devices),
         options = std::move(options)](const core::Caller& caller) {
            core::AllocateRequest req;
            req.vm = vm;
            req.devices = devices;
            req.caller = caller;
            req.mode = core::ContextMode::Reserved;
            try {
                decodeReserveOptions(options, req, [this](uint32_t pid) {
                    return ownerUidOf("option 'owner_pid'", pid);
                });
            } catch (const sdbus::Error& e) {
                result->returnError(e);
                return;
            }
            engine_.allocate(req, realtimeUsec(),
                             [this, alive, result, started, vm, devices,
                              caller](core::Outcome<const core::Context*> outcome) {
                                 if (!alive.lock()) {
                                     return;
                                 }
                                 if (!outcome.ok()) {
                                     const core::Failure& f = outcome.failure();
                                     logRefusal("reservation", vm, devices, f, caller);
                                     metrics_.allocation(started, f);
                                     result->returnError(busError(f));
                                 } else {
                                     const core::Context& ctx = *outcome.value();
                                     std::set<std::string> used;
                                     std::vector<std::string> plugins;
                                     for (const auto& d : ctx.devices) {
                                         used.insert(d.plugin);
                                         plugins.push_back(d.plugin);
                                     }
                                     log::notice("devices reserved for the VM",
                                                 {{"VM", ctx.vm},
                                                  {"CONTEXT", std::to_string(ctx.id)},
                                                  {"DEVICE", joined(devices)},
                                                  {"PLUGIN", joined(plugins)},
                                                  {"MODE", core::contextModeName(ctx.mode)},
                                                  {"VERDICT", "ALLOW"},
                                                  {"OWNER_PID", std::to_string(ctx.ownerPid)},
                                                  {"CALLER_UID", std::to_string(caller.uid)},
                                                  {"CALLER_PID", std::to_string(caller.pid)}});
                                     const bool hostChanged = ctx.hostChanged;
                                     result->returnResults(sdbus::ObjectPath(contextPath(ctx.id)),
                                                           reservationInfo(ctx));
                                     metrics_.allocation(started, std::nullopt,
                                                         joined(std::vector<std::string>(
                                                             used.begin(), used.end())));
                                     if (hostChanged && hooks_.rescan) {
                                         hooks_.rescan();
                                     }
                                 }
                                 if (hooks_.kick) {
                                     hooks_.kick();
                                 }
                             });
        });
}

void ContextMethods::setVmOwner(
    const std::shared_ptr<sdbus::Result<std::vector<sdbus::ObjectPath>>>& result,
    const std::string& sender, std::string vm, uint32_t pid) {
    asAdmin(
        "SetVmOwner", sender,
        [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, vm = std::move(vm), pid](const core::Caller& caller) {
            auto uid = ownerUidOf("pid", pid);
            if (!uid.ok()) {
                result->returnError(busError(uid.failure()));
                return;
            }
            auto ids = engine_.setVmOwner(vm, static_cast<pid_t>(pid), uid.value(), caller);
            if (!ids.ok()) {
                result->returnError(busError(ids.failure()));
                return;
            }
            std::vector<sdbus::ObjectPath> paths;
            for (uint64_t id : ids.value()) {
                paths.emplace_back(contextPath(id));
            }
            result->returnResults(paths);
        });
}

void ContextMethods::releaseVm(const std::shared_ptr<sdbus::Result<uint32_t>>& result,
                               const std::string& sender, std::string vm) {
    asAdmin(
        "ReleaseVm", sender, [result](const core::Failure& f) { result->returnError(busError(f)); },
        [this, result, vm = std::move(vm)](const core::Caller& caller) {
            const std::vector<uint64_t> ids = engine_.reservationsOf(vm);
            for (uint64_t id : ids) {
                if (auto access = engine_.checkAccess(id, caller); !access.ok()) {
                    result->returnError(busError(access.failure()));
                    return;
                }
            }
            if (ids.empty()) {
                result->returnResults(0U);
                return;
            }
            // Answered once every one is torn down and its devices are free.
            auto left = std::make_shared<size_t>(ids.size());
            const auto count = static_cast<uint32_t>(ids.size());
            for (uint64_t id : ids) {
                engine_.releaseAsync(id, "released with its VM",
                                     [result, left, count, kick = hooks_.kick] {
                                         if (--*left == 0) {
                                             result->returnResults(count);
                                             if (kick) {
                                                 kick();
                                             }
                                         }
                                     });
            }
        });
}

void ContextMethods::contextOwnerChanged(const core::Context& ctx) {
    (void)objects_.announce(contextPath(ctx.id), {"OwnerPid", "OwnerUid"});
}

void ContextMethods::list(const std::string& start, uint32_t limit,
                          std::vector<ListedObject>& out) const {
    objects_.list(start, limit, out);
}

void ContextMethods::contextCreated(const core::Context& ctx) {
    objects_.add(contextPath(ctx.id), ContextData{&engine_, ctx.id});
    std::vector<std::string> devices;
    for (const auto& d : ctx.devices) {
        devices.push_back(d.id);
    }
    host_.announceHolders(devices);
}

void ContextMethods::contextStateChanged(const core::Context& ctx, const std::string& reason) {
    const std::string path = contextPath(ctx.id);
    if (ctx.state != core::ContextState::Degraded) {
        (void)objects_.announce(path, "State");
        log::notice("the devices of the context are back: context active",
                    {{"VM", ctx.vm}, {"CONTEXT", std::to_string(ctx.id)}});
        return;
    }
    if (objects_.rows().count(path) != 0) {
        // A reason may quote a kernel error about a node under the dev root: bounded, valid UTF-8.
        objects_.emitSignal(path, "Degraded", core::cutUtf8(reason, 1024));
        (void)objects_.announce(path, "State");
    }
    log::warning("context degraded: " + reason,
                 {{"VM", ctx.vm},
                  {"CONTEXT", std::to_string(ctx.id)},
                  {"DEVICE", core::goneDevices(ctx, engine_.hostIndex())}});
}

void ContextMethods::contextReleased(const core::Context& ctx, const std::string& reason) {
    std::vector<std::string> devices;
    for (const auto& d : ctx.devices) {
        devices.push_back(d.id);
    }
    if (const std::string path = contextPath(ctx.id); objects_.rows().count(path) != 0) {
        objects_.emitSignal(path, "Released", core::cutUtf8(reason, 1024));
        objects_.remove(path);
    }
    host_.announceHolders(devices);
    log::notice("context released: " + reason, {{"VM", ctx.vm},
                                                {"CONTEXT", std::to_string(ctx.id)},
                                                {"DEVICE", joined(devices)},
                                                {"REASON", reason}});
}

} // namespace svad::dbus
