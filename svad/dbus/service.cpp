#include "svad/dbus/service.h"

#include "svad/core/log.h"
#include "svad/core/paths.h"
#include "svad/names.h"
#include "svad/version.h"

#include <boost/asio/post.hpp>
#include <time.h>
#include <unordered_map>

namespace svad::dbus {

namespace {

uint64_t realtimeUsec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

[[noreturn]] void throwError(names::Error e, const std::string& message) {
    throw sdbus::Error(std::string(names::errorInfo(e).dbusName), message);
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

// A filter value of the expected D-Bus type, or InvalidArgument naming both.
template <typename T>
T filterValue(const std::string& key, const sdbus::Variant& v, const char* signature) {
    if (!v.containsValueOfType<T>()) {
        throwError(names::Error::InvalidArgument, "filter key '" + key + "' expects type '" +
                                                      signature + "', got '" + v.peekValueType() +
                                                      "'");
    }
    return v.get<T>();
}

} // namespace

Service::Service(boost::asio::io_context& io, sdbus::IConnection& connection, BusLoop& loop,
                 ServiceOptions options, ScanFunction scan)
    : AdaptorInterfaces(connection, std::string(names::kRootPath)), io_(io),
      connection_(connection), loop_(loop), options_(std::move(options)), scan_(std::move(scan)) {
    registerAdaptor();
}

Service::~Service() {
    alive_.reset();
    worker_.join();
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
        DeviceData data{options_.devRoot, d, std::nullopt, {}};
        if (auto it = links.find(d.address); it != links.end()) {
            data.links = it->second;
        }
        devices.emplace(core::devicePath(d.address), std::move(data));
    }
    for (const auto& v : host.vdpa) {
        DeviceData data{options_.devRoot, {}, v, {}};
        devices.emplace(core::vdpaPath(v.name), std::move(data));
    }
    std::map<std::string, QueueData> queues;
    for (const auto& q : host.queues) {
        queues.emplace(core::queuePath(q.name), QueueData{options_.devRoot, q});
    }

    // Objects that others point at appear first and go last.
    syncObjects(connection_, units_, std::move(units), emit);
    syncObjects(connection_, groups_, std::move(groups), emit);
    syncObjects(connection_, devices_, std::move(devices), emit);
    syncObjects(connection_, queues_, std::move(queues), emit);

    host_ = std::move(host);
    lastScanUsec_ = realtimeUsec();
    ++scanCount_;
    if (emit) {
        emitPropertiesChangedSignal(Manager_adaptor::INTERFACE_NAME,
                                    {"DeviceCount", "VdpaDeviceCount", "GroupCount", "UnitCount",
                                     "QueueCount", "PasidDeviceCount", "WarningCount", "Warnings",
                                     "LastScanTime", "ScanCount"});
    }
    log::info("host scanned", {{"DEVICES", std::to_string(host_.devices.size())},
                               {"GROUPS", std::to_string(host_.groups.size())},
                               {"UNITS", std::to_string(host_.units.size())},
                               {"QUEUES", std::to_string(host_.queues.size())},
                               {"VDPA", std::to_string(host_.vdpa.size())}});
}

void Service::rescan(std::function<void()> done) {
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
        core::Host host = scan_();
        boost::asio::post(io_, [this, alive, host = std::move(host)]() mutable {
            if (alive.lock()) {
                scanFinished(std::move(host));
            }
        });
    });
}

void Service::scanFinished(core::Host host) {
    scanning_ = false;
    apply(std::move(host), true);
    auto done = std::move(waitingCurrent_);
    waitingCurrent_.clear();
    if (nextRequested_) {
        nextRequested_ = false;
        waitingCurrent_ = std::move(waitingNext_);
        waitingNext_.clear();
        startScan();
    }
    for (auto& d : done) {
        d();
    }
    loop_.kick();
}

void Service::Rescan(sdbus::Result<>&& result) {
    auto shared = std::make_shared<sdbus::Result<>>(std::move(result));
    rescan([shared] { shared->returnResults(); });
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
                       "unknown filter key '" + key +
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

} // namespace svad::dbus
