#include "svad/dbus/host_publisher.h"

#include "svad/core/log.h"
#include "svad/core/paths.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <unordered_map>

namespace svad::dbus {

namespace {

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

template <typename Objects>
void take(const Objects& objects, const std::string& iface, const std::string& start,
          uint32_t limit, std::vector<ListedObject>& out) {
    uint32_t n = 0;
    for (auto it = objects.lower_bound(start); it != objects.end(); ++it) {
        if (limit != 0 && n++ >= limit) {
            break;
        }
        auto* object = it->second.get();
        out.push_back({it->first, iface, [object] { return propertiesOf(*object); },
                       [object] { return wireBytesOf(*object); }});
    }
}

} // namespace

HostPublisher::HostPublisher(sdbus::IConnection& connection, std::string devRoot,
                             const core::Engine& engine)
    : connection_(connection), devRoot_(std::move(devRoot)), engine_(engine) {}

HostPublisher::~HostPublisher() {
    // Objects that others point at go last.
    queues_.clear();
    devices_.clear();
    groups_.clear();
    units_.clear();
}

void HostPublisher::publish(const core::Host& host, bool emit) {
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
        DeviceData data{devRoot_, &engine_, d, std::nullopt, {}};
        if (auto it = links.find(d.address); it != links.end()) {
            data.links = it->second;
        }
        devices.emplace(core::devicePath(d.address), std::move(data));
    }
    for (const auto& v : host.vdpa) {
        DeviceData data{devRoot_, &engine_, {}, v, {}};
        devices.emplace(core::vdpaPath(v.name), std::move(data));
    }
    std::map<std::string, QueueData> queues;
    for (const auto& q : host.queues) {
        queues.emplace(core::queuePath(q.name), QueueData{devRoot_, &engine_, q});
    }

    // Objects that others point at appear first and go last.
    syncObjects(connection_, units_, std::move(units), emit);
    syncObjects(connection_, groups_, std::move(groups), emit);
    syncObjects(connection_, devices_, std::move(devices), emit);
    syncObjects(connection_, queues_, std::move(queues), emit);
}

void HostPublisher::announceHolders(const std::vector<std::string>& devices) {
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

void HostPublisher::list(const std::string& start, uint32_t limit,
                         std::vector<ListedObject>& out) const {
    take(units_, std::string(names::kUnitInterface), start, limit, out);
    take(groups_, std::string(names::kGroupInterface), start, limit, out);
    take(devices_, std::string(names::kDeviceInterface), start, limit, out);
    take(queues_, std::string(names::kQueueInterface), start, limit, out);
}

void logWarnings(const core::Host& host) {
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

} // namespace svad::dbus
