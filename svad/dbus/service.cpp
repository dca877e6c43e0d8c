#include "svad/dbus/service.h"

#include "svad/core/log.h"
#include "svad/core/paths.h"
#include "svad/core/text.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/metrics/metrics.h"
#include "svad/names.h"
#include "svad/version.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <set>
#include <sys/syscall.h>
#include <system_error>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>
#include <unordered_map>

namespace svad::dbus {

namespace {

uint64_t realtimeUsec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// An error's text is bounded and valid UTF-8 whatever it quotes: a message
// over the bus's limit would take svad off the bus, an invalid one is not sent.
constexpr size_t kMaxErrorText = size_t{16} * 1024;

[[noreturn]] void throwError(names::Error e, const std::string& message) {
    throw compat::makeError(std::string(names::errorInfo(e).dbusName),
                            core::cutUtf8(message, kMaxErrorText));
}

// Brings `objects` in line with `next`: removes, updates and adds, emitting
// the ObjectManager and Properties signals when `emit` is set.
template <typename Object, typename Data>
void syncObjects(sdbus::IConnection& connection,
                 std::map<std::string, std::unique_ptr<Object>>& objects,
                 std::map<std::string, Data> next, bool emit) {
    for (auto it = objects.begin(); it != objects.end();) {
        if (next.find(it->first) == next.end()) {
            if (emit) {
                it->second->emitInterfacesRemovedSignal();
            }
            it = objects.erase(it);
        } else {
            ++it;
        }
    }
    for (auto& [path, data] : next) {
        auto it = objects.find(path);
        if (it == objects.end()) {
            auto obj = std::make_unique<Object>(connection, path, std::move(data));
            if (emit) {
                obj->emitInterfacesAddedSignal();
            }
            objects.emplace(path, std::move(obj));
        } else if (!(it->second->data() == data)) {
            it->second->update(std::move(data));
            if (emit) {
                it->second->emitPropertiesChangedSignal(Object::Adaptor::INTERFACE_NAME);
            }
        }
    }
}

// A value of the expected D-Bus type, or InvalidArgument naming both; `what`
// is "filter key" or "option".
template <typename T>
T typedValue(const char* what, const std::string& key, const sdbus::Variant& v,
             const char* signature) {
    if (!v.containsValueOfType<T>()) {
        throwError(names::Error::InvalidArgument, std::string(what) + " '" + core::echo(key) +
                                                      "' expects type '" + signature + "', got '" +
                                                      core::echo(v.peekValueType()) + "'");
    }
    return v.get<T>();
}

template <typename T>
T filterValue(const std::string& key, const sdbus::Variant& v, const char* signature) {
    return typedValue<T>("filter key", key, v, signature);
}

template <typename T>
T optionValue(const std::string& key, const sdbus::Variant& v, const char* signature) {
    return typedValue<T>("option", key, v, signature);
}

} // namespace

Service::Service(boost::asio::io_context& io, sdbus::IConnection& connection, BusLoop& loop,
                 ServiceOptions options, ScanFunction scan, core::Engine& engine,
                 ports::KernelFeatures features)
    : AdaptorInterfaces(connection, sdbus::ObjectPath(std::string(names::kRootPath))), io_(io),
      connection_(connection), loop_(loop), options_(std::move(options)), scan_(std::move(scan)),
      engine_(engine), features_(std::move(features)) {
    registerAdaptor();
    // Owners without a pidfd are followed by their bus name.
    busProxy_ = compat::makeProxy(connection_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    compat::onSignal(*busProxy_, "org.freedesktop.DBus", "NameOwnerChanged",
                     [this](sdbus::Signal& signal) {
                         std::string name;
                         std::string oldOwner;
                         std::string newOwner;
                         signal >> name >> oldOwner >> newOwner;
                         if (newOwner.empty()) {
                             credentials_.erase(name);
                             onNameLost(name);
                         }
                     });
    compat::finishRegistration(*busProxy_);
    // The bus answers a message it refuses to pass on (a reply with fds to a connection
    // without fd passing) with an error to svad; onBusError picks out svad's replies.
    busErrors_ = compat::addMatch(connection_, "type='error',sender='org.freedesktop.DBus'",
                                  [this](sdbus::Message& m) { onBusError(m); });
    sd_bus* bus = compat::rawBus(getObject(), std::string(names::kManagerInterface));
    if (bus == nullptr ||
        sd_bus_add_filter(bus, &treeFilter_, &Service::objectManagerFilter, this) < 0) {
        throw std::runtime_error("cannot install the GetManagedObjects size check on the bus");
    }
}

Service::~Service() {
    treeFilter_ = sd_bus_slot_unref(treeFilter_);
    alive_.reset();
    worker_.join();
    busErrors_.reset();
    pendingReplies_.clear();
    // Contexts stay with the engine (their fds live on in the VMMs); only the bus side goes.
    pidWatches_.clear();
    contextObjects_.clear();
    busProxy_.reset();
    queues_.clear();
    devices_.clear();
    groups_.clear();
    units_.clear();
    unregisterAdaptor();
}

std::string Service::Version() {
    return SVAD_VERSION;
}

uint32_t Service::PasidDeviceCount() {
    uint32_t n = 0;
    for (const auto& d : host_.devices) {
        n += d.caps.pasid.present ? 1 : 0;
    }
    return n;
}

uint32_t Service::WarningCount() {
    uint32_t n = static_cast<uint32_t>(host_.warnings.size());
    auto count = [&n](const auto& list) {
        for (const auto& o : list) {
            n += o.warnings.empty() ? 0 : 1;
        }
    };
    count(host_.units);
    count(host_.groups);
    count(host_.devices);
    count(host_.queues);
    count(host_.vdpa);
    return n;
}

void Service::publishInitial(core::Host host) {
    apply(std::move(host), false);
}

void Service::logWarnings(const core::Host& host) const {
    for (const auto& w : host.warnings) {
        log::warning(w);
    }
    for (const auto& d : host.devices) {
        for (const auto& w : d.warnings) {
            log::warning(w, {{"DEVICE", d.address}});
        }
    }
    for (const auto& g : host.groups) {
        for (const auto& w : g.warnings) {
            log::warning(w, {{"GROUP", std::to_string(g.id)}});
        }
    }
    for (const auto& u : host.units) {
        for (const auto& w : u.warnings) {
            log::warning(w, {{"UNIT", u.name}});
        }
    }
    for (const auto& q : host.queues) {
        for (const auto& w : q.warnings) {
            log::warning(w, {{"QUEUE", q.name}});
        }
    }
    for (const auto& v : host.vdpa) {
        for (const auto& w : v.warnings) {
            log::warning(w, {{"DEVICE", v.name}});
        }
    }
}

void Service::apply(core::Host host, bool emit) {
    logWarnings(host);

    std::map<std::string, core::IommuUnit> units;
    for (const auto& u : host.units) {
        units.emplace(core::unitPath(u.name), u);
    }
    std::map<std::string, core::IommuGroup> groups;
    for (const auto& g : host.groups) {
        groups.emplace(core::groupPath(g.id), g);
    }
    std::unordered_map<std::string, DeviceLinks> links;
    for (const auto& q : host.queues) {
        links[q.parentDevice].queues.push_back(q.name);
    }
    for (const auto& v : host.vdpa) {
        links[v.parentDevice].vdpa.push_back(v.name);
    }
    std::map<std::string, DeviceData> devices;
    for (const auto& d : host.devices) {
        DeviceData data{options_.devRoot, &engine_, d, std::nullopt, {}};
        if (auto it = links.find(d.address); it != links.end()) {
            data.links = it->second;
        }
        devices.emplace(core::devicePath(d.address), std::move(data));
    }
    for (const auto& v : host.vdpa) {
        DeviceData data{options_.devRoot, &engine_, {}, v, {}};
        devices.emplace(core::vdpaPath(v.name), std::move(data));
    }
    std::map<std::string, QueueData> queues;
    for (const auto& q : host.queues) {
        queues.emplace(core::queuePath(q.name), QueueData{options_.devRoot, &engine_, q});
    }

    // Objects that others point at appear first and go last.
    syncObjects(connection_, units_, std::move(units), emit);
    syncObjects(connection_, groups_, std::move(groups), emit);
    syncObjects(connection_, devices_, std::move(devices), emit);
    syncObjects(connection_, queues_, std::move(queues), emit);

    if (options_.onHostChanged) {
        options_.onHostChanged(host);
    }
    engine_.setHost(host);
    for (uint64_t id : engine_.markDegraded()) {
        contextStateChanged(id, emit);
    }
    host_ = std::move(host);
    lastScanUsec_ = realtimeUsec();
    ++scanCount_;
    if (emit) {
        emitPropertiesChangedSignal(
            Manager_adaptor::INTERFACE_NAME,
            compat::propertyNames({"DeviceCount", "VdpaDeviceCount", "GroupCount", "UnitCount",
                                   "QueueCount", "PasidDeviceCount", "WarningCount", "Warnings",
                                   "LastScanTime", "ScanCount"}));
    }
    observe();
    log::info("host scanned", {{"DEVICES", std::to_string(host_.devices.size())},
                               {"GROUPS", std::to_string(host_.groups.size())},
                               {"UNITS", std::to_string(host_.units.size())},
                               {"QUEUES", std::to_string(host_.queues.size())},
                               {"VDPA", std::to_string(host_.vdpa.size())}});
}

void Service::rescan(ScanDone done) {
    if (!scanning_) {
        if (done) {
            waitingCurrent_.push_back(std::move(done));
        }
        startScan();
        return;
    }
    // A scan is in flight, but it may have started before the change the
    // caller wants to see: answer after the next one.
    nextRequested_ = true;
    if (done) {
        waitingNext_.push_back(std::move(done));
    }
}

void Service::startScan() {
    scanning_ = true;
    std::weak_ptr<int> alive = alive_;
    boost::asio::post(worker_, [this, alive] {
        std::optional<core::Host> host;
        std::string error;
        try {
            host = scan_();
        } catch (const std::exception& e) {
            error = e.what();
        }
        boost::asio::post(io_, [this, alive, host = std::move(host), error]() mutable {
            if (alive.lock()) {
                scanFinished(std::move(host), error);
            }
        });
    });
}

void Service::scanFinished(std::optional<core::Host> host, const std::string& error) {
    scanning_ = false;
    std::optional<std::string> failure;
    if (host) {
        apply(std::move(*host), true);
        reprobe();
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
        startScan();
    }
    for (auto& d : done) {
        d(failure);
    }
    loop_.kick();
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

void Service::Rescan(sdbus::Result<>&& result) {
    (void)admin("Rescan");
    auto shared = std::make_shared<sdbus::Result<>>(std::move(result));
    rescan([shared](const std::optional<std::string>& error) {
        if (error) {
            shared->returnError(
                compat::makeError(std::string(names::errorInfo(names::Error::KernelError).dbusName),
                                  core::cutUtf8(*error, kMaxErrorText)));
        } else {
            shared->returnResults();
        }
    });
}

std::vector<ListedObject> Service::listedObjects(const std::string& start, uint32_t limit) {
    std::vector<ListedObject> out;
    auto take = [&](auto& objects, const std::string& iface) {
        uint32_t n = 0;
        for (auto it = objects.lower_bound(start); it != objects.end(); ++it) {
            if (limit != 0 && n++ >= limit) {
                break;
            }
            auto* object = it->second.get();
            out.push_back({it->first, iface, [object] { return propertiesOf(*object); },
                           [object] { return wireBytesOf(*object); }});
        }
    };
    take(units_, std::string(names::kUnitInterface));
    take(groups_, std::string(names::kGroupInterface));
    take(devices_, std::string(names::kDeviceInterface));
    take(queues_, std::string(names::kQueueInterface));
    // Contexts are kept by number; their paths sort as text.
    for (const auto& [id, object] : contextObjects_) {
        std::string path = contextPath(id);
        if (path >= start) {
            auto* o = object.get();
            out.push_back({std::move(path), std::string(names::kContextInterface),
                           [o] { return propertiesOf(*o); }, [o] { return wireBytesOf(*o); }});
        }
    }
    std::sort(out.begin(), out.end(),
              [](const ListedObject& a, const ListedObject& b) { return a.path < b.path; });
    return out;
}

std::tuple<ObjectTree, std::string> Service::ListObjects(const std::string& start,
                                                         const uint32_t& limit) {
    const uint32_t pageLimit = limit == 0 || limit > kMaxPageObjects ? kMaxPageObjects : limit;
    // One more of each kind than a page holds: the object after the page is then
    // among them, whichever kind it is.
    Page page = pageOf(listedObjects(start, pageLimit + 1), start, pageLimit);
    return {std::move(page.objects), std::move(page.next)};
}

int Service::objectManagerFilter(sd_bus_message* m, void* userdata, sd_bus_error* /*unused*/) {
    if (sd_bus_message_is_method_call(m, "org.freedesktop.DBus.ObjectManager",
                                      "GetManagedObjects") <= 0) {
        return 0;
    }
    auto* self = static_cast<Service*>(userdata);
    const char* at = sd_bus_message_get_path(m);
    const std::string under = at == nullptr ? std::string() : std::string(at) + "/";
    size_t bytes = 0;
    size_t objects = 0;
    for (const auto& o : self->listedObjects(under, 0)) {
        if (o.path.rfind(under, 0) != 0) {
            break; // sorted: past the subtree
        }
        ++objects;
        bytes += objectWireBytes(o.path, o.iface, o.wireBytes());
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
    if (auto v = self->refusalLog_.admit(kTreeKey, std::chrono::steady_clock::now()); v.log) {
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
    // Decode the filter once; an unknown key is an error, not a silent match-all.
    std::optional<uint32_t> kind;
    std::optional<std::string> address;
    std::optional<std::string> driver;
    std::optional<std::string> unit;
    std::optional<uint16_t> vendor;
    std::optional<uint16_t> device;
    std::optional<uint32_t> group;
    std::optional<bool> pasid;
    std::optional<bool> ats;
    std::optional<bool> pri;
    std::optional<bool> siov;
    std::optional<bool> vfio;
    for (const auto& [key, value] : filter) {
        if (key == "kind") {
            kind = filterValue<uint32_t>(key, value, "u");
            if (*kind != 1 && *kind != 2) {
                throwError(names::Error::InvalidArgument,
                           "filter key 'kind' must be 1 (pci) or 2 (vdpa)");
            }
        } else if (key == "address") {
            address = filterValue<std::string>(key, value, "s");
        } else if (key == "driver") {
            driver = filterValue<std::string>(key, value, "s");
        } else if (key == "unit") {
            unit = filterValue<std::string>(key, value, "s");
        } else if (key == "vendor") {
            vendor = filterValue<uint16_t>(key, value, "q");
        } else if (key == "device") {
            device = filterValue<uint16_t>(key, value, "q");
        } else if (key == "group") {
            group = filterValue<uint32_t>(key, value, "u");
        } else if (key == "pasid") {
            pasid = filterValue<bool>(key, value, "b");
        } else if (key == "ats") {
            ats = filterValue<bool>(key, value, "b");
        } else if (key == "pri") {
            pri = filterValue<bool>(key, value, "b");
        } else if (key == "siov") {
            siov = filterValue<bool>(key, value, "b");
        } else if (key == "vfio") {
            vfio = filterValue<bool>(key, value, "b");
        } else {
            throwError(names::Error::InvalidArgument,
                       "unknown filter key '" + core::echo(key) +
                           "' (known: kind address vendor device driver pasid ats pri siov "
                           "group unit vfio)");
        }
    }

    std::vector<sdbus::ObjectPath> out;
    for (const auto& [path, obj] : devices_) {
        const DeviceData& d = obj->data();
        const bool isVdpa = d.vdpa.has_value();
        const auto& pci = d.pci;
        if (kind && *kind != (isVdpa ? 2U : 1U)) {
            continue;
        }
        if (address && *address != (isVdpa ? d.vdpa->name : pci.address)) {
            continue;
        }
        if (driver && *driver != (isVdpa ? d.vdpa->driver : pci.driver)) {
            continue;
        }
        const bool pciOnlyKey =
            unit || vendor || device || group || pasid || ats || pri || siov || vfio;
        if (isVdpa && pciOnlyKey) {
            continue;
        }
        if ((unit && *unit != pci.iommuUnit) || (vendor && *vendor != pci.vendor) ||
            (device && *device != pci.device) || (group && pci.group != group) ||
            (pasid && *pasid != pci.caps.pasid.present) || (ats && *ats != pci.caps.ats.present) ||
            (pri && *pri != pci.caps.pri.present) || (siov && *siov != pci.caps.siov) ||
            (vfio && *vfio != !pci.vfioDevice.empty())) {
            continue;
        }
        out.emplace_back(path);
    }
    return out;
}

// ---- Contexts -------------------------------------------------------------------

namespace {

[[noreturn]] void throwFailure(const core::Failure& f) {
    throwError(f.error, f.message);
}

const char* modeName(core::ContextMode m) {
    return m == core::ContextMode::Attached ? "attached" : "handoff";
}

std::string joined(const std::vector<std::string>& items, const char* sep = ",") {
    std::string out;
    for (const auto& i : items) {
        out += (out.empty() ? "" : sep) + i;
    }
    return out;
}

std::string joinedLines(const std::vector<std::string>& items) {
    return joined(items, "\n");
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

// The groups of a uid in the user database (primary first); just the primary
// gid's absence is fine: a uid without an entry has no groups.
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

} // namespace

core::Caller Service::caller() {
    core::Caller c;
    std::optional<std::string> sender = compat::currentSender(getObject());
    if (!sender) {
        throwError(names::Error::PermissionDenied, "no caller");
    }
    c.busName = *sender;
    // Credentials come from the bus daemon (GetConnectionCredentials), never from what
    // the caller sends nor from /proc, where a recycled pid could answer for another.
    auto it = credentials_.find(c.busName);
    if (it == credentials_.end()) {
        std::map<std::string, sdbus::Variant> creds;
        busProxy_->callMethod("GetConnectionCredentials")
            .onInterface("org.freedesktop.DBus")
            .withArguments(c.busName)
            .storeResultsTo(creds);
        auto uid = creds.find("UnixUserID");
        auto pid = creds.find("ProcessID");
        if (uid == creds.end() || !uid->second.containsValueOfType<uint32_t>()) {
            throwError(names::Error::PermissionDenied,
                       "the bus did not tell who " + c.busName + " is");
        }
        Credentials cr;
        cr.uid = uid->second.get<uint32_t>();
        cr.pid = pid != creds.end() && pid->second.containsValueOfType<uint32_t>()
                     ? static_cast<pid_t>(pid->second.get<uint32_t>())
                     : 0;
        // Groups: as the bus saw them when it has them, else the uid's groups in the user
        // database (both name the uid the bus vouches for, never the caller's words).
        auto gids = creds.find("UnixGroupIDs");
        if (gids != creds.end() && gids->second.containsValueOfType<std::vector<uint32_t>>()) {
            for (uint32_t g : gids->second.get<std::vector<uint32_t>>()) {
                cr.gids.push_back(static_cast<gid_t>(g));
            }
        } else {
            cr.gids = groupsOfUser(cr.uid);
        }
        it = credentials_.emplace(c.busName, std::move(cr)).first;
    }
    c.uid = it->second.uid;
    c.pid = it->second.pid;
    c.gids = it->second.gids;
    return c;
}

core::Caller Service::admin(const std::string& action) {
    core::Caller c = caller();
    const core::Config& config = engine_.config();
    if (!config.isAdmin(c.uid, c.gids)) {
        std::string who = config.adminGroup.empty()
                              ? std::string("root only (no admin_group is configured)")
                              : "root and members of group " + config.adminGroup;
        // Anyone on the bus may call (the bus policy aside): the record of each
        // refusal is rate-limited per uid, and the next one says what was held back.
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
        throwError(names::Error::PermissionDenied,
                   action + " is for " + who + "; uid " + std::to_string(c.uid) + " is neither");
    }
    return c;
}

void Service::Reload(sdbus::Result<>&& result) {
    (void)admin("Reload");
    auto shared = std::make_shared<sdbus::Result<>>(std::move(result));
    if (!options_.reload) {
        throwError(names::Error::NotSupported, "this svad cannot reload");
    }
    std::weak_ptr<int> alive = alive_;
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
            shared->returnError(compat::makeError(
                std::string(names::errorInfo(names::Error::InvalidArgument).dbusName),
                core::cutUtf8(joinedLines(errors), kMaxErrorText)));
        } else {
            emitPropertiesChangedSignal(
                Manager_adaptor::INTERFACE_NAME,
                compat::propertyNames({"ConfigFile", "AdminGroup", "DefaultPolicy"}));
            shared->returnResults();
        }
        loop_.kick();
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

uint64_t Service::contextFromPath(const std::string& path) const {
    uint64_t id = contextIdOf(path);
    if (id == 0 || engine_.find(id) == nullptr) {
        throwError(names::Error::NotFound, "no context at " + core::echo(path));
    }
    return id;
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
    // The reply is sent by hand rather than through `result`, to learn its cookie: a bus
    // refuses a reply with fds to a connection without fd passing only after the fact.
    (void)result;
    std::optional<sdbus::MethodCall> current = compat::currentCall(getObject());
    if (!current) {
        throwError(names::Error::InvalidArgument, "no method call");
    }
    const auto started = std::chrono::steady_clock::now();
    core::AllocateRequest req;
    req.vm = vm;
    req.devices = devices;
    req.caller = admin("AllocateContext");
    for (const auto& [key, value] : options) {
        if (key == "mode") {
            auto mode = optionValue<std::string>(key, value, "s");
            if (mode == "handoff") {
                req.mode = core::ContextMode::Handoff;
            } else if (mode == "attached") {
                req.mode = core::ContextMode::Attached;
            } else {
                throwError(names::Error::InvalidArgument,
                           "option 'mode' must be 'handoff' or 'attached', not '" +
                               core::echo(mode) + "'");
            }
        } else if (key == "fault_queue") {
            req.faultQueue = optionValue<bool>(key, value, "b");
        } else if (key == "owner_pid") {
            auto pid = optionValue<uint32_t>(key, value, "u");
            if (pid == 0 || pid > INT32_MAX) {
                throwError(names::Error::InvalidArgument, "option 'owner_pid' is not a pid");
            }
            req.ownerPid = static_cast<pid_t>(pid);
        } else {
            throwError(names::Error::InvalidArgument, "unknown option '" + core::echo(key) +
                                                          "' (known: mode fault_queue owner_pid)");
        }
    }

    auto outcome = engine_.allocate(req, realtimeUsec());
    if (!outcome.ok()) {
        log::warning("allocation refused: " + outcome.failure().message,
                     {{"VM", core::echo(vm)},
                      {"DEVICE", echoList(devices)},
                      {"VERDICT", "DENY"},
                      {"ERROR", std::string(names::errorInfo(outcome.failure().error).dbusName)},
                      {"REASON", outcome.failure().message},
                      {"CALLER_UID", std::to_string(req.caller.uid)},
                      {"CALLER_PID", std::to_string(req.caller.pid)}});
        recordAllocation(started, outcome.failure());
        throwFailure(outcome.failure());
    }
    const uint64_t id = outcome.value()->id;
    // From here on the context exists in the engine: anything that fails before the
    // reply is sent takes it back (through the normal release once it was announced),
    // so nothing half-published stays; a reply the bus refuses does too (onBusError).
    const bool hostChanged = outcome.value()->hostChanged;
    std::set<std::string> used;
    for (const auto& d : outcome.value()->devices) {
        used.insert(d.plugin);
    }
    sdbus::MethodCall call = std::move(*current);
    uint64_t cookie = 0;
    try {
        auto [path, iommufd, fds, info] = publishContext(*outcome.value(), devices, req.caller);
        sdbus::MethodReply reply = call.createReply();
        reply << path << iommufd << fds << info;
        reply.send();
        (void)sd_bus_message_get_cookie(compat::rawMessage(reply), &cookie);
    } catch (const std::exception& e) {
        recordAllocation(started, core::Failure{names::Error::KernelError, e.what()});
        log::error(std::string("context taken back, it could not be handed over: ") + e.what(),
                   {{"VM", core::echo(vm)}, {"CONTEXT", std::to_string(id)}});
        if (contextObjects_.count(id) != 0) {
            // InterfacesAdded went out: the normal release says that it is gone again.
            finishRelease(id, "it could not be handed over");
        } else {
            forgetLease(id);
            engine_.releaseUnchecked(id);
        }
        if (const auto* busError = dynamic_cast<const sdbus::Error*>(&e)) {
            throw *busError;
        }
        throwError(names::Error::KernelError,
                   std::string("cannot hand over the context: ") + e.what());
    }
    watchDelivery(id, cookie, std::move(call));
    if (hostChanged) {
        rescan(); // a plugin rebound drivers: publish what the host looks like now
    }
    recordAllocation(started, std::nullopt,
                     joined(std::vector<std::string>(used.begin(), used.end())));
}

void Service::watchDelivery(uint64_t id, uint64_t cookie, sdbus::MethodCall call) {
    if (cookie == 0) {
        return; // not sent: nothing to follow
    }
    pendingReplies_.insert_or_assign(cookie, PendingReply{id, std::move(call)});
    // The bus handles svad's messages in order, and sends its answers in order: once it
    // answers this call, it has passed the reply on, or its refusal was dispatched first.
    std::weak_ptr<int> alive = alive_;
    try {
        busProxy_->callMethodAsync("GetId")
            .onInterface("org.freedesktop.DBus")
            .uponReplyInvoke(
                [this, alive, cookie](compat::AsyncError /*error*/, const std::string& /*busId*/) {
                    if (alive.lock()) {
                        pendingReplies_.erase(cookie);
                    }
                });
    } catch (const sdbus::Error& e) {
        // The reply went out; only the watch is lost, and the entry with it.
        pendingReplies_.erase(cookie);
        log::warning(std::string("cannot follow the delivery of a context's reply: ") + e.what(),
                     {{"CONTEXT", std::to_string(id)}});
    }
}

void Service::onBusError(sdbus::Message& message) {
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
    finishRelease(pending.context, "the reply carrying its fds could not be delivered");
    // The caller still waits for an answer: one without fds can reach it.
    try {
        pending.call
            .createErrorReply(compat::makeError(
                std::string(names::errorInfo(names::Error::NotSupported).dbusName),
                "the reply carries file descriptors and the bus would not deliver it (" + why +
                    "); connect with unix fd passing; the context was released"))
            .send();
    } catch (const sdbus::Error& e) {
        log::warning(std::string("cannot answer the caller of a context taken back: ") + e.what(),
                     {{"CONTEXT", std::to_string(pending.context)}});
    }
}

std::tuple<sdbus::ObjectPath, sdbus::UnixFd, std::map<std::string, sdbus::UnixFd>,
           std::map<std::string, sdbus::Variant>>
Service::publishContext(const core::Context& ctx, const std::vector<std::string>& devices,
                        const core::Caller& caller) {
    const std::string path = contextPath(ctx.id);
    // Duplicates for the reply first: a full fd table fails here, before anything is public.
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
    for (const auto& d : ctx.devices) {
        fds.emplace(d.id, dupFd(d.fd.get()));
        pasidWidths[d.id] = d.pasidWidth;
        if (d.kind == core::HeldKind::Vfio && ctx.mode == core::ContextMode::Attached) {
            devIds[d.id] = d.devId;
        }
        if (d.kind == core::HeldKind::Vdpa) {
            vdpaGroups[d.id] = d.vdpaGroups;
            vdpaSpaces[d.id] = d.vdpaAddressSpaces;
        }
    }
    std::map<std::string, sdbus::Variant> info;
    info["mode"] = sdbus::Variant(std::string(modeName(ctx.mode)));
    info["pasid_widths"] = sdbus::Variant(pasidWidths);
    std::map<std::string, std::string> pluginOf;
    for (const auto& d : ctx.devices) {
        pluginOf[d.id] = d.plugin;
    }
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
    if (!vdpaGroups.empty()) {
        info["vdpa_groups"] = sdbus::Variant(vdpaGroups);
        info["vdpa_address_spaces"] = sdbus::Variant(vdpaSpaces);
    }
    if (ctx.faultQueueFd.valid()) {
        info["fault_queue_id"] = sdbus::Variant(ctx.faultQueueId);
        info["fault_queue_fd"] = sdbus::Variant(dupFd(ctx.faultQueueFd.get()));
    }

    auto object = std::make_unique<ContextObject>(connection_, path, engine_, ctx.id);
    object->emitInterfacesAddedSignal();
    contextObjects_.emplace(ctx.id, std::move(object));
    watchOwner(ctx);
    announceHolders(devices);
    std::vector<std::string> plugins;
    for (const auto& d : ctx.devices) {
        plugins.push_back(d.plugin);
    }
    log::notice("context allocated", {{"VM", ctx.vm},
                                      {"CONTEXT", std::to_string(ctx.id)},
                                      {"DEVICE", joined(devices)},
                                      {"PLUGIN", joined(plugins)},
                                      {"MODE", modeName(ctx.mode)},
                                      {"VERDICT", "ALLOW"},
                                      {"CALLER_UID", std::to_string(caller.uid)},
                                      {"CALLER_PID", std::to_string(caller.pid)}});
    return {sdbus::ObjectPath(path), std::move(iommufd), std::move(fds), std::move(info)};
}

void Service::announceContext(uint64_t id, const std::vector<std::string>& properties) {
    if (auto it = contextObjects_.find(id); it != contextObjects_.end()) {
        it->second->announceChanged(properties);
    }
}

void Service::announceHolders(const std::vector<std::string>& devices) {
    for (const auto& id : devices) {
        if (auto it = devices_.find(core::devicePath(id)); it != devices_.end()) {
            it->second->emitPropertiesChangedSignal(DeviceObject::Adaptor::INTERFACE_NAME,
                                                    compat::propertyNames({"HeldBy"}));
        } else if (auto v = devices_.find(core::vdpaPath(id)); v != devices_.end()) {
            v->second->emitPropertiesChangedSignal(DeviceObject::Adaptor::INTERFACE_NAME,
                                                   compat::propertyNames({"HeldBy"}));
        } else if (auto q = queues_.find(core::queuePath(id)); q != queues_.end()) {
            q->second->emitPropertiesChangedSignal(QueueObject::Adaptor::INTERFACE_NAME,
                                                   compat::propertyNames({"HeldBy"}));
        }
    }
}

void Service::watchOwner(const core::Context& ctx) {
    const uint64_t id = ctx.id;
    errno = 0;
    int pidfd =
        ctx.ownerPid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, ctx.ownerPid, 0)) : -1;
    if (pidfd >= 0) {
        ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        std::unique_ptr<boost::asio::posix::stream_descriptor> watch;
        try {
            watch = std::make_unique<boost::asio::posix::stream_descriptor>(io_, pidfd);
        } catch (const std::exception& e) {
            ::close(pidfd);
            log::warning(std::string("cannot watch the owner's pidfd, following its bus name: ") +
                             e.what(),
                         {{"CONTEXT", std::to_string(id)}});
            nameWatches_[ctx.ownerBusName].push_back(id);
            return;
        }
        std::weak_ptr<int> alive = alive_;
        watch->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                          [this, alive, id](const boost::system::error_code& ec) {
                              if (ec || !alive.lock()) {
                                  return;
                              }
                              finishRelease(id, "owner process exited");
                              loop_.kick();
                          });
        pidWatches_.emplace(id, std::move(watch));
        return;
    }
    if (errno == ESRCH) {
        // The owner is already gone: the lease ends as soon as it began.
        std::weak_ptr<int> alive = alive_;
        boost::asio::post(io_, [this, alive, id] {
            if (alive.lock()) {
                finishRelease(id, "owner process exited");
                loop_.kick();
            }
        });
        return;
    }
    nameWatches_[ctx.ownerBusName].push_back(id);
}

void Service::onNameLost(const std::string& name) {
    auto it = nameWatches_.find(name);
    if (it == nameWatches_.end()) {
        return;
    }
    auto ids = std::move(it->second);
    nameWatches_.erase(it);
    for (uint64_t id : ids) {
        finishRelease(id, "owner left the bus");
    }
}

void Service::forgetLease(uint64_t id) {
    pidWatches_.erase(id);
    for (auto& [name, ids] : nameWatches_) {
        ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
    }
}

void Service::finishRelease(uint64_t id, const std::string& reason) {
    const core::Context* ctx = engine_.find(id);
    if (ctx == nullptr) {
        return;
    }
    std::vector<std::string> devices;
    for (const auto& d : ctx->devices) {
        devices.push_back(d.id);
    }
    const std::string vm = ctx->vm;
    if (auto it = contextObjects_.find(id); it != contextObjects_.end()) {
        it->second->announceRelease(reason);
        contextObjects_.erase(it);
    }
    forgetLease(id);
    engine_.releaseUnchecked(id);
    announceHolders(devices);
    if (options_.metrics != nullptr) {
        options_.metrics->release(reason);
    }
    observe();
    log::notice("context released: " + reason, {{"VM", vm},
                                                {"CONTEXT", std::to_string(id)},
                                                {"DEVICE", joined(devices)},
                                                {"REASON", reason}});
}

void Service::ReleaseContext(const sdbus::ObjectPath& context) {
    const uint64_t id = contextFromPath(context);
    if (auto access = engine_.checkAccess(id, admin("ReleaseContext")); !access.ok()) {
        throwFailure(access.failure());
    }
    finishRelease(id, "released by the owner");
}

uint32_t Service::AllocatePasid(const sdbus::ObjectPath& context, const std::string& device,
                                const std::map<std::string, sdbus::Variant>& options) {
    const uint64_t id = contextFromPath(context);
    if (!options.empty()) {
        throwError(names::Error::InvalidArgument, "unknown option '" +
                                                      core::echo(options.begin()->first) +
                                                      "' (none are defined yet)");
    }
    auto outcome = engine_.allocatePasid(id, device, admin("AllocatePasid"));
    if (!outcome.ok()) {
        log::warning("PASID refused: " + outcome.failure().message,
                     {{"CONTEXT", std::to_string(id)}, {"DEVICE", core::echo(device)}});
        if (options_.metrics != nullptr && outcome.failure().error == names::Error::QuotaExceeded) {
            options_.metrics->pasidQuotaRefusal();
        }
        throwFailure(outcome.failure());
    }
    const uint32_t pasid = outcome.value();
    announceContext(id, {"Pasids"});
    observe();
    log::info(
        "PASID allocated",
        {{"CONTEXT", std::to_string(id)}, {"DEVICE", device}, {"PASID", std::to_string(pasid)}});
    return pasid;
}

void Service::ReleasePasid(const sdbus::ObjectPath& context, const uint32_t& pasid) {
    const uint64_t id = contextFromPath(context);
    auto outcome = engine_.releasePasid(id, pasid, admin("ReleasePasid"));
    if (!outcome.ok()) {
        throwFailure(outcome.failure());
    }
    announceContext(id, {"Pasids"});
    observe();
    log::info("PASID released",
              {{"CONTEXT", std::to_string(id)}, {"PASID", std::to_string(pasid)}});
}

void Service::SetVirtualId(const sdbus::ObjectPath& context, const std::string& device,
                           const uint64_t& virtId) {
    const uint64_t id = contextFromPath(context);
    auto outcome = engine_.setVirtualId(id, device, virtId, admin("SetVirtualId"));
    if (!outcome.ok()) {
        throwFailure(outcome.failure());
    }
    announceContext(id, {"VirtualIds"});
}

} // namespace svad::dbus
