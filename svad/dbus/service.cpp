#include "svad/dbus/service.h"

#include "svad/core/log.h"
#include "svad/core/paths.h"
#include "svad/core/text.h"
#include "svad/dbus/clock.h"
#include "svad/dbus/device_filter.h"
#include "svad/dbus/errors.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/metrics/metrics.h"
#include "svad/names.h"
#include "svad/version.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <systemd/sd-bus.h>

namespace svad::dbus {

namespace {

std::string joinedLines(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) {
        out += (out.empty() ? "" : "\n") + i;
    }
    return out;
}

// How many allocations and releases may wait on the kernel or a plugin at once
// (a driver rebind, a device reset); the loop is never one of them.
constexpr unsigned kWorkers = 4;

} // namespace

Service::Service(boost::asio::io_context& io, sdbus::IConnection& connection, BusLoop& loop,
                 ServiceOptions options, ScanFunction scan, core::Engine& engine,
                 ports::KernelFeatures features)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::string(names::kRootPath))), io_(io),
      connection_(connection), loop_(loop), options_(std::move(options)), engine_(engine),
      features_(std::move(features)), offload_(io, kWorkers),
      busProxy_(compat::makeProxy(connection, "org.freedesktop.DBus", "/org/freedesktop/DBus")),
      hostObjects_(compat::rawBus(connection), options_.devRoot, engine),
      metrics_(options_.metrics, engine), identity_(io, *busProxy_),
      leases_(io, engine, [&loop] { loop.kick(); }),
      contexts_(io, connection, *busProxy_, engine, identity_, hostObjects_, metrics_,
                ContextMethods::Hooks{[this] { rescan(); }, [&loop] { loop.kick(); },
                                      options_.processUid}),
      rescans_(
          io, [this, scan = std::move(scan)] { return prepare(scan()); },
          [this](ReadyHost host) {
              apply(std::move(host), true);
              reprobe();
              loop_.kick();
          }) {
    engine_.setOffload(&offload_);
    registerAdaptor();
    compat::onSignal(*busProxy_, "org.freedesktop.DBus", "NameOwnerChanged",
                     [this](sdbus::Signal& signal) {
                         std::string name;
                         std::string oldOwner;
                         std::string newOwner;
                         signal >> name >> oldOwner >> newOwner;
                         if (newOwner.empty()) {
                             identity_.forget(name);
                             leases_.nameLost(name);
                         }
                     });
    compat::finishRegistration(*busProxy_);
    sd_bus* bus = compat::rawBus(getObject(), std::string(names::kManagerInterface));
    if (bus == nullptr || sd_bus_add_filter(bus, &treeFilter_, &Service::busFilter, this) < 0) {
        throw std::runtime_error("cannot install svad's message filter on the bus");
    }
}

Service::~Service() {
    treeFilter_ = sd_bus_slot_unref(treeFilter_);
    alive_.reset();
    engine_.setOffload(nullptr);
    unregisterAdaptor();
}

std::string Service::Version() {
    return SVAD_VERSION;
}

uint32_t Service::PasidDeviceCount() {
    uint32_t n = 0;
    for (const auto& d : host().devices) {
        n += d.caps.pasid.present ? 1 : 0;
    }
    return n;
}

uint32_t Service::WarningCount() {
    uint32_t n = static_cast<uint32_t>(host().warnings.size());
    auto count = [&n](const auto& list) {
        for (const auto& o : list) {
            n += o.warnings.empty() ? 0 : 1;
        }
    };
    count(host().units);
    count(host().groups);
    count(host().devices);
    count(host().queues);
    count(host().vdpa);
    return n;
}

void Service::publishInitial(core::Host host) {
    apply(prepare(std::move(host)), false);
}

ReadyHost Service::prepare(core::Host scanned) const {
    // One copy of the host, shared by the engine's index and the bus's objects.
    auto shared = std::make_shared<const core::Host>(std::move(scanned));
    ReadyHost out;
    out.index = std::make_shared<const core::HostIndex>(shared);
    out.objects = hostObjects_.prepare(std::move(shared));
    return out;
}

void Service::apply(ReadyHost ready, bool emit) {
    const std::shared_ptr<const core::Host> shared = ready.objects.host;
    const core::Host& host = *shared;
    Retired retired;
    warnings_.update(host);
    hostObjects_.publish(std::move(ready.objects), emit, retired);
    if (options_.onHostChanged) {
        options_.onHostChanged(host);
    }
    const size_t devices = host.devices.size();
    const size_t groups = host.groups.size();
    const size_t units = host.units.size();
    const size_t queues = host.queues.size();
    const size_t vdpa = host.vdpa.size();
    retired.push_back(engine_.setHostIndex(std::move(ready.index)));
    // The old rows, index and host are freed on a worker: at 16,384 functions
    // that is tens of milliseconds the loop keeps for callers.
    auto old = std::make_shared<Retired>(std::move(retired));
    offload_.run(
        [old] {
            old->clear();
            // A host's worth of memory was just freed: give it back rather than keep
            // the peak of two hosts for good.
            (void)malloc_trim(0);
        },
        [] {});
    (void)engine_.markDegraded(); // the observers announce each change
    lastScanUsec_ = realtimeUsec();
    ++scanCount_;
    if (emit) {
        emitPropertiesChangedSignal(
            Manager_adaptor::INTERFACE_NAME,
            compat::propertyNames({"DeviceCount", "VdpaDeviceCount", "GroupCount", "UnitCount",
                                   "QueueCount", "PasidDeviceCount", "WarningCount", "Warnings",
                                   "LastScanTime", "ScanCount"}));
    }
    metrics_.observe();
    log::info("host scanned", {{"DEVICES", std::to_string(devices)},
                               {"GROUPS", std::to_string(groups)},
                               {"UNITS", std::to_string(units)},
                               {"QUEUES", std::to_string(queues)},
                               {"VDPA", std::to_string(vdpa)}});
}

void Service::rescan(ScanDone done) {
    rescans_.request(std::move(done));
}

void Service::applyRefreshed(ReadyHost host) {
    apply(std::move(host), true);
    rescans_.refreshed();
    loop_.kick();
}

void Service::stopping() {
    rescans_.stopping();
}

std::string Service::sender() {
    std::optional<std::string> s = compat::currentSender(getObject());
    if (!s) {
        throwError(names::Error::PermissionDenied, "no caller");
    }
    return *s;
}

void Service::asAdmin(const std::string& action, const std::shared_ptr<sdbus::Result<>>& result,
                      std::function<void()> then) {
    std::weak_ptr<int> alive = alive_;
    identity_.admin(
        action, sender(), [this]() -> const core::Config& { return engine_.config(); },
        [this, alive, result, then = std::move(then)](const core::Outcome<core::Caller>& who) {
            if (!alive.lock()) {
                return;
            }
            if (!who.ok()) {
                result->returnError(busError(who.failure()));
                loop_.kick();
                return;
            }
            then();
        });
}

void Service::Rescan(sdbus::Result<>&& result) {
    auto shared = std::make_shared<sdbus::Result<>>(std::move(result));
    asAdmin("Rescan", shared, [this, shared] {
        rescan([shared](const std::optional<std::string>& error) {
            if (error) {
                shared->returnError(busError(names::Error::KernelError, *error));
            } else {
                shared->returnResults();
            }
        });
    });
}

std::vector<ListedObject> Service::listedObjects(const std::string& start, uint32_t limit) {
    std::vector<ListedObject> out;
    hostObjects_.list(start, limit, out);
    contexts_.list(start, limit, out);
    std::sort(out.begin(), out.end(),
              [](const ListedObject& a, const ListedObject& b) { return a.path < b.path; });
    return out;
}

void Service::reprobe() {
    if (!options_.probe) {
        return;
    }
    const auto before = KernelFeatures();
    const auto beforeNotes = KernelFeatureNotes();
    features_ = options_.probe();
    if (KernelFeatures() != before || KernelFeatureNotes() != beforeNotes) {
        std::string now;
        for (const auto& [name, present] : KernelFeatures()) {
            now += (now.empty() ? "" : " ") + name + "=" + (present ? "yes" : "no");
        }
        log::notice("kernel features changed: " + now);
        emitPropertiesChangedSignal(
            Manager_adaptor::INTERFACE_NAME,
            compat::propertyNames({"KernelFeatures", "KernelFeatureNotes"}));
    }
}

namespace {

// The names a ListObjectsWithProperties call asks for; nullopt (with `why`) when
// there are too many or one is too long to be a property's.
constexpr size_t kMaxPropertyNames = 256;
constexpr size_t kMaxPropertyName = 255;
std::optional<PropertyNames> propertyNamesOf(const std::vector<std::string>& names,
                                             std::string& why) {
    if (names.size() > kMaxPropertyNames) {
        why = std::to_string(names.size()) + " property names: at most " +
              std::to_string(kMaxPropertyNames) + " may be asked for";
        return std::nullopt;
    }
    PropertyNames out;
    for (const auto& n : names) {
        if (n.size() > kMaxPropertyName) {
            why = "a property name of " + std::to_string(n.size()) + " bytes: at most " +
                  std::to_string(kMaxPropertyName);
            return std::nullopt;
        }
        out.insert(n);
    }
    return out;
}

} // namespace

std::tuple<ObjectTree, std::string> Service::ListObjects(const std::string& start,
                                                         const uint32_t& limit) {
    return ListObjectsWithProperties(start, limit, {});
}

std::tuple<ObjectTree, std::string>
Service::ListObjectsWithProperties(const std::string& start, const uint32_t& limit,
                                   const std::vector<std::string>& properties) {
    std::string why;
    const auto only = propertyNamesOf(properties, why);
    if (!only) {
        throwError(names::Error::InvalidArgument, why);
    }
    const uint32_t pageLimit = limit == 0 || limit > kMaxPageObjects ? kMaxPageObjects : limit;
    // One more of each kind than a page holds: the object after the page is then
    // among them, whichever kind it is.
    Page page = pageOf(listedObjects(start, pageLimit + 1), start, pageLimit,
                       properties.empty() ? nullptr : &*only);
    return {std::move(page.objects), std::move(page.next)};
}

// sd-bus calls this from C: nothing may be thrown through it.
int Service::busFilter(sd_bus_message* m, void* userdata, sd_bus_error* /*unused*/) try {
    auto* self = static_cast<Service*>(userdata);
    if (sd_bus_message_is_method_call(m, "org.freedesktop.DBus.ObjectManager",
                                      "GetManagedObjects") > 0) {
        return self->refuseLargeTree(m);
    }
    const bool all =
        sd_bus_message_is_method_call(m, names::kManagerInterface.data(), "ListObjects") > 0;
    if (all || sd_bus_message_is_method_call(m, names::kManagerInterface.data(),
                                             "ListObjectsWithProperties") > 0) {
        const char* path = sd_bus_message_get_path(m);
        if (path != nullptr && names::kRootPath == path) {
            return self->answerListObjects(m, !all);
        }
    }
    return 0;
} catch (const std::exception& e) {
    log::error(std::string("a message could not be looked at: ") + e.what());
    return -ENOMEM;
}

int Service::answerListObjects(sd_bus_message* m, bool withProperties) {
    auto refuse = [m](names::Error error, const std::string& message) {
        const sd_bus_error e =
            SD_BUS_ERROR_MAKE_CONST(names::errorInfo(error).dbusName.data(), message.c_str());
        (void)sd_bus_reply_method_error(m, &e);
        return 1;
    };
    const char* start = nullptr;
    uint32_t limit = 0;
    char** asked = nullptr;
    int r = sd_bus_message_read(m, "su", &start, &limit);
    if (r >= 0 && withProperties) {
        r = sd_bus_message_read_strv(m, &asked);
    }
    std::vector<std::string> properties;
    for (char** n = asked; n != nullptr && *n != nullptr; ++n) {
        properties.emplace_back(*n);
        std::free(*n);
    }
    std::free(static_cast<void*>(asked));
    if (r < 0 || sd_bus_message_at_end(m, false) <= 0) {
        // Not the method's arguments: sdbus-c++ answers it with its error.
        (void)sd_bus_message_rewind(m, true);
        return 0;
    }
    if (sd_bus_message_get_expect_reply(m) == 0) {
        return 1; // no one waits for the page
    }
    std::string why;
    const auto only = propertyNamesOf(properties, why);
    if (!only) {
        return refuse(names::Error::InvalidArgument, why);
    }
    const uint32_t pageLimit = limit == 0 || limit > kMaxPageObjects ? kMaxPageObjects : limit;
    // One more of each kind than a page holds: the object after the page is then
    // among them, whichever kind it is.
    const std::string from(start);
    const std::vector<ListedObject> objects = listedObjects(from, pageLimit + 1);
    sd_bus_message* reply = nullptr;
    r = sd_bus_message_new_method_return(m, &reply);
    r = r < 0 ? r
              : appendPage(reply, objects, from, pageLimit, properties.empty() ? nullptr : &*only);
    r = r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    reply = sd_bus_message_unref(reply);
    if (r < 0) {
        log::warning(std::string("cannot answer ListObjects: ") + std::strerror(-r));
        return refuse(names::Error::KernelError,
                      std::string("the page could not be written: ") + std::strerror(-r));
    }
    return 1;
}

int Service::refuseLargeTree(sd_bus_message* m) {
    Service* self = this;
    const char* at = sd_bus_message_get_path(m);
    const std::string under = at == nullptr ? std::string() : std::string(at) + "/";
    size_t bytes = 0;
    size_t objects = 0;
    for (const auto& o : self->listedObjects(under, 0)) {
        if (o.path.rfind(under, 0) != 0) {
            break; // sorted: past the subtree
        }
        ++objects;
        bytes += objectWireBytes(o.path, o.iface, o.wireBytes(nullptr));
        if (bytes > kMaxReplyBytes) {
            break;
        }
    }
    if (bytes <= kMaxReplyBytes) {
        return 0; // sd-bus answers
    }
    const std::string message = "the object tree is too large for one reply (more than " +
                                std::to_string(kMaxReplyBytes >> 20) + " MiB after " +
                                std::to_string(objects) + " objects; a bus message may carry " +
                                std::to_string(kBusMessageLimit >> 20) +
                                " MiB): read it in pages with org.svad.Svad1.Manager.ListObjects";
    // Anyone may call it: one key for all callers bounds what they can log.
    constexpr uint64_t kTreeKey = UINT64_MAX;
    if (auto v = self->identity_.refusalLog().admit(kTreeKey, std::chrono::steady_clock::now());
        v.log) {
        const char* sender = sd_bus_message_get_sender(m);
        log::Fields fields = {{"CALLER", sender == nullptr ? "?" : sender}};
        if (v.suppressed > 0) {
            fields.emplace_back("SUPPRESSED", std::to_string(v.suppressed));
        }
        log::warning("GetManagedObjects refused: " + message, fields);
    }
    const sd_bus_error error = SD_BUS_ERROR_MAKE_CONST(
        names::errorInfo(names::Error::TooLarge).dbusName.data(), message.c_str());
    (void)sd_bus_reply_method_error(m, &error);
    return 1;
}

std::vector<sdbus::ObjectPath>
Service::ListDevices(const std::map<std::string, sdbus::Variant>& filter) {
    const DeviceFilter f = DeviceFilter::parse(filter);
    std::vector<sdbus::ObjectPath> out;
    for (const auto* rows : {&hostObjects_.pciDevices(), &hostObjects_.vdpaDevices()}) {
        for (const auto& [path, data] : *rows) {
            if (f.matches(data)) {
                out.emplace_back(path);
            }
        }
    }
    return out;
}

void Service::Reload(sdbus::Result<>&& result) {
    auto shared = std::make_shared<sdbus::Result<>>(std::move(result));
    if (!options_.reload) {
        throwError(names::Error::NotSupported, "this svad cannot reload");
    }
    std::weak_ptr<int> alive = alive_;
    asAdmin("Reload", shared, [this, alive, shared] {
        options_.reload([this, alive, shared](std::vector<std::string> errors) {
            if (!alive.lock()) {
                return;
            }
            if (!errors.empty()) {
                // A file can hold any number of errors: the reply names the first ones.
                constexpr size_t kMaxErrors = 20;
                if (errors.size() > kMaxErrors) {
                    const size_t more = errors.size() - kMaxErrors;
                    errors.resize(kMaxErrors);
                    errors.push_back("(" + std::to_string(more) + " more errors)");
                }
                for (auto& e : errors) {
                    e = core::cutUtf8(e, 512);
                }
                shared->returnError(busError(names::Error::InvalidArgument, joinedLines(errors)));
            } else {
                emitPropertiesChangedSignal(
                    Manager_adaptor::INTERFACE_NAME,
                    compat::propertyNames({"ConfigFile", "AdminGroup", "DefaultPolicy"}));
                shared->returnResults();
            }
            loop_.kick();
        });
    });
}

// Text that comes from files, plugins and the command line: a D-Bus string must be valid UTF-8.
std::vector<
    sdbus::Struct<std::string, std::string, std::string, uint32_t, std::vector<std::string>>>
Service::Plugins() {
    auto out = options_.plugins ? options_.plugins()
                                : std::vector<sdbus::Struct<std::string, std::string, std::string,
                                                            uint32_t, std::vector<std::string>>>{};
    for (auto& p : out) {
        std::get<0>(p) = core::sanitizeUtf8(std::get<0>(p));
        std::get<1>(p) = core::sanitizeUtf8(std::get<1>(p));
        std::get<2>(p) = core::sanitizeUtf8(std::get<2>(p));
        for (auto& k : std::get<4>(p)) {
            k = core::sanitizeUtf8(k);
        }
    }
    return out;
}

std::vector<sdbus::Struct<std::string, std::string>> Service::PluginRefusals() {
    auto out = options_.pluginRefusals ? options_.pluginRefusals()
                                       : std::vector<sdbus::Struct<std::string, std::string>>{};
    for (auto& r : out) {
        std::get<0>(r) = core::sanitizeUtf8(std::get<0>(r));
        std::get<1>(r) = core::sanitizeUtf8(std::get<1>(r));
    }
    return out;
}

std::string Service::ConfigFile() {
    return core::sanitizeUtf8(engine_.config().path);
}

std::string Service::AdminGroup() {
    return core::sanitizeUtf8(engine_.config().adminGroup);
}

std::string Service::SysfsRoot() {
    return core::sanitizeUtf8(options_.sysfsRoot);
}

std::string Service::DevRoot() {
    return core::sanitizeUtf8(options_.devRoot);
}

std::string Service::DefaultPolicy() {
    return engine_.config().defaultPolicy == core::RuleAction::Allow ? "allow" : "deny";
}

std::map<std::string, bool> Service::KernelFeatures() {
    return {{"iommufd", features_.iommufd},      {"rlimit_mode", features_.rlimitMode},
            {"hw_info", features_.hwInfo},       {"fault_queue", features_.faultQueue},
            {"vfio_cdev", features_.vfioCdev},   {"pasid_attach", features_.pasidAttach},
            {"vhost_vdpa", features_.vhostVdpa}, {"idxd", features_.idxd}};
}

std::map<std::string, std::string> Service::KernelFeatureNotes() {
    // Keyed as KernelFeatures is: the port's "vfioCdev" is "vfio_cdev" on the bus.
    std::map<std::string, std::string> out;
    for (const auto& [name, why] : features_.absentReasons) {
        std::string key;
        for (char c : name) {
            if (c >= 'A' && c <= 'Z') {
                key += '_';
                key += static_cast<char>(c - 'A' + 'a');
            } else {
                key += c;
            }
        }
        out[key] = core::sanitizeUtf8(why);
    }
    return out;
}

void Service::AllocateContext(AllocateResult&& result, std::string vm,
                              std::vector<std::string> devices,
                              std::map<std::string, sdbus::Variant> options) {
    // The reply is sent by hand rather than through `result`, to learn its cookie.
    (void)result;
    std::optional<sdbus::MethodCall> current = compat::currentCall(getObject());
    if (!current) {
        throwError(names::Error::InvalidArgument, "no method call");
    }
    contexts_.allocate(std::move(*current), sender(), std::move(vm), std::move(devices),
                       std::move(options));
}

void Service::ReleaseContext(sdbus::Result<>&& result, sdbus::ObjectPath context) {
    contexts_.release(std::make_shared<sdbus::Result<>>(std::move(result)), sender(), context);
}

void Service::AllocatePasid(sdbus::Result<uint32_t>&& result, sdbus::ObjectPath context,
                            std::string device, std::map<std::string, sdbus::Variant> options) {
    contexts_.allocatePasid(std::make_shared<sdbus::Result<uint32_t>>(std::move(result)), sender(),
                            context, std::move(device), std::move(options));
}

void Service::ReleasePasid(sdbus::Result<>&& result, sdbus::ObjectPath context, uint32_t pasid) {
    contexts_.releasePasid(std::make_shared<sdbus::Result<>>(std::move(result)), sender(), context,
                           pasid);
}

void Service::SetVirtualId(sdbus::Result<>&& result, sdbus::ObjectPath context, std::string device,
                           uint64_t virtId) {
    contexts_.setVirtualId(std::make_shared<sdbus::Result<>>(std::move(result)), sender(), context,
                           device, virtId);
}

void Service::ReserveDevices(ContextMethods::ReserveResult&& result, std::string vm,
                             std::vector<std::string> devices,
                             std::map<std::string, sdbus::Variant> options) {
    contexts_.reserve(std::make_shared<ContextMethods::ReserveResult>(std::move(result)), sender(),
                      std::move(vm), std::move(devices), std::move(options));
}

void Service::SetVmOwner(sdbus::Result<std::vector<sdbus::ObjectPath>>&& result, std::string vm,
                         uint32_t pid) {
    contexts_.setVmOwner(
        std::make_shared<sdbus::Result<std::vector<sdbus::ObjectPath>>>(std::move(result)),
        sender(), std::move(vm), pid);
}

void Service::ReleaseVm(sdbus::Result<uint32_t>&& result, std::string vm) {
    contexts_.releaseVm(std::make_shared<sdbus::Result<uint32_t>>(std::move(result)), sender(),
                        std::move(vm));
}

} // namespace svad::dbus
