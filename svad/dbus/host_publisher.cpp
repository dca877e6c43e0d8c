#include "svad/dbus/host_publisher.h"

#include "svad/core/log.h"
#include "svad/core/paths.h"
#include "svad/names.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace svad::dbus {

namespace {

// A signal sd-bus could not send: told now, or counted into `failed` when given.
void warnIfFailed(int r, const char* what, const std::string& path,
                  EmitFailures* failed = nullptr) {
    if (r >= 0) {
        return;
    }
    if (failed == nullptr) {
        log::warning(std::string("cannot emit ") + what + ": " + std::strerror(-r),
                     {{"OBJECT", path}});
        return;
    }
    if (failed->count++ == 0) {
        failed->firstError = r;
        failed->firstObject = path;
    }
}

} // namespace

template <typename Data>
Subtree<Data>::Subtree(sd_bus* bus, std::string_view prefix) : bus_(bus), prefix_(prefix) {
    // sd-bus takes the prefix without its trailing '/'.
    const std::string base = prefix_.substr(0, prefix_.size() - 1);
    const PropertyTable<Data>& table = propertyTable<Data>();
    int r = sd_bus_add_fallback_vtable(bus_, &vtableSlot_, base.c_str(), table.interface(),
                                       table.vtable(), &Subtree::find, this);
    if (r >= 0) {
        r = sd_bus_add_node_enumerator(bus_, &enumeratorSlot_, base.c_str(), &Subtree::enumerate,
                                       this);
    }
    if (r < 0) {
        vtableSlot_ = sd_bus_slot_unref(vtableSlot_);
        throw std::runtime_error("cannot serve " + base + " on the bus: " + std::strerror(-r));
    }
}

template <typename Data> Subtree<Data>::~Subtree() {
    enumeratorSlot_ = sd_bus_slot_unref(enumeratorSlot_);
    vtableSlot_ = sd_bus_slot_unref(vtableSlot_);
}

template <typename Data>
int Subtree<Data>::find(sd_bus* /*bus*/, const char* path, const char* /*interface*/,
                        void* userdata, void** found, sd_bus_error* /*error*/) {
    const auto* self = static_cast<const Subtree*>(userdata);
    auto it = self->rows_->find(std::string_view(path));
    if (it == self->rows_->end()) {
        return 0;
    }
    *found = const_cast<Data*>(&it->second);
    return 1;
}

// sd-bus asks for the nodes under `path`, the object asked about: all of this
// kind when `path` is the prefix or above it, none when it is one of them
// (they have no children). Answering all of them for every path would make
// introspecting the whole tree quadratic.
template <typename Data>
int Subtree<Data>::enumerate(sd_bus* /*bus*/, const char* path, void* userdata, char*** nodes,
                             sd_bus_error* /*error*/) {
    const auto* self = static_cast<const Subtree*>(userdata);
    *nodes = nullptr;
    const std::string_view asked(path);
    // prefix_ ends in '/': asked is the prefix itself or a whole path above it.
    const bool above = asked == "/" || (self->prefix_.size() > asked.size() &&
                                        self->prefix_.compare(0, asked.size(), asked) == 0 &&
                                        self->prefix_[asked.size()] == '/');
    if (!above || self->rows_->empty()) {
        return 0;
    }
    auto** out = static_cast<char**>(std::calloc(self->rows_->size() + 1, sizeof(char*)));
    if (out == nullptr) {
        return -ENOMEM;
    }
    size_t n = 0;
    for (const auto& [p, row] : *self->rows_) {
        out[n] = strdup(p.c_str());
        if (out[n] == nullptr) {
            for (size_t i = 0; i < n; ++i) {
                std::free(out[i]);
            }
            std::free(out);
            return -ENOMEM;
        }
        ++n;
    }
    *nodes = out;
    return 1;
}

template <typename Data> typename Subtree<Data>::Change Subtree<Data>::prepare(Rows next) const {
    Change change;
    {
        std::lock_guard lock(mu_);
        change.base = rows_;
    }
    change.next = std::make_shared<const Rows>(std::move(next));
    diff(*change.base, change);
    return change;
}

template <typename Data> void Subtree<Data>::diff(const Rows& from, Change& change) {
    const Rows& to = *change.next;
    change.removed.clear();
    change.added.clear();
    change.changed.clear();
    // Both in path order: one walk.
    auto a = from.begin();
    auto b = to.begin();
    while (a != from.end() || b != to.end()) {
        if (b == to.end() || (a != from.end() && a->first < b->first)) {
            change.removed.push_back(a->first);
            ++a;
        } else if (a == from.end() || b->first < a->first) {
            change.added.push_back(b->first);
            ++b;
        } else {
            if (!(a->second == b->second)) { // the model's values only: no engine
                change.changed.push_back(b->first);
            }
            ++a;
            ++b;
        }
    }
}

template <typename Data>
void Subtree<Data>::removeGone(Change& change, bool emit, EmitFailures& failed) {
    if (change.base != rows_) {
        // Published meanwhile (a hotplug refresh and a rescan crossed): work it out again.
        change.base = rows_;
        diff(*rows_, change);
    }
    if (!emit) {
        return;
    }
    // sd-bus names the interfaces the object still has: these go out before the rows do.
    for (const auto& path : change.removed) {
        warnIfFailed(sd_bus_emit_object_removed(bus_, path.c_str()), "InterfacesRemoved", path,
                     &failed);
    }
}

template <typename Data>
std::shared_ptr<const typename Subtree<Data>::Rows>
Subtree<Data>::addOrUpdate(Change& change, bool emit, EmitFailures& failed) {
    std::shared_ptr<const Rows> old = rows_;
    {
        // Rows are never changed through `next` again (prepared_ makes add and
        // remove refuse): the const is the contract.
        std::lock_guard lock(mu_);
        rows_ = std::const_pointer_cast<Rows>(change.next);
        prepared_ = true;
    }
    if (emit) {
        const PropertyTable<Data>& table = propertyTable<Data>();
        for (const auto& path : change.added) {
            warnIfFailed(sd_bus_emit_object_added(bus_, path.c_str()), "InterfacesAdded", path,
                         &failed);
        }
        for (const auto& path : change.changed) {
            auto before = old->find(path);
            auto after = rows_->find(path);
            if (before == old->end() || after == rows_->end()) {
                continue;
            }
            // Only what changed is named (a rebind: Driver and what follows from it).
            std::vector<const char*> names = table.changed(before->second, after->second);
            if (names.size() > 1) {
                warnIfFailed(sd_bus_emit_properties_changed_strv(bus_, path.c_str(),
                                                                 table.interface(),
                                                                 const_cast<char**>(names.data())),
                             "PropertiesChanged", path, &failed);
            }
        }
    }
    change = {};
    return old;
}

template <typename Data>
bool Subtree<Data>::announce(const std::string& path, const char* property) {
    return announce(path, std::vector<const char*>{property});
}

template <typename Data>
bool Subtree<Data>::announce(const std::string& path, std::vector<const char*> properties) {
    if (rows_->find(path) == rows_->end()) {
        return false;
    }
    properties.push_back(nullptr);
    warnIfFailed(sd_bus_emit_properties_changed_strv(bus_, path.c_str(),
                                                     propertyTable<Data>().interface(),
                                                     const_cast<char**>(properties.data())),
                 "PropertiesChanged", path);
    return true;
}

template <typename Data> void Subtree<Data>::add(const std::string& path, Data data) {
    if (prepared_) {
        throw std::logic_error("svad: " + prefix_ + " is published whole: no row is added alone");
    }
    rows_->insert_or_assign(path, std::move(data));
    warnIfFailed(sd_bus_emit_object_added(bus_, path.c_str()), "InterfacesAdded", path);
}

template <typename Data> void Subtree<Data>::remove(const std::string& path) {
    if (prepared_) {
        throw std::logic_error("svad: " + prefix_ + " is published whole: no row goes alone");
    }
    auto it = rows_->find(path);
    if (it == rows_->end()) {
        return;
    }
    // sd-bus names the interfaces the object still has: it goes after.
    warnIfFailed(sd_bus_emit_object_removed(bus_, path.c_str()), "InterfacesRemoved", path);
    rows_->erase(it);
}

template <typename Data>
void Subtree<Data>::emitSignal(const std::string& path, const char* member,
                               const std::string& text) {
    const PropertyTable<Data>& table = propertyTable<Data>();
    const SignalSpec* spec = table.signal(member);
    if (spec == nullptr || std::string_view(spec->signature) != "s") {
        // What introspection shows comes from the XML: never send something else.
        log::error(std::string("not sent: ") + table.interface() + "." + member +
                       " is not a signal of one string in the interface's XML",
                   {{"OBJECT", path}});
        return;
    }
    warnIfFailed(
        sd_bus_emit_signal(bus_, path.c_str(), table.interface(), member, "s", text.c_str()),
        member, path);
}

template <typename Data>
void Subtree<Data>::list(const std::string& start, uint32_t limit,
                         std::vector<ListedObject>& out) const {
    const PropertyTable<Data>& table = propertyTable<Data>();
    uint32_t n = 0;
    for (auto it = rows_->lower_bound(start); it != rows_->end(); ++it) {
        if (limit != 0 && n++ >= limit) {
            break;
        }
        const Data* row = &it->second;
        out.push_back(
            {it->first, table.interface(), [&table, row] { return table.variants(*row); },
             [&table, row](const PropertyNames* only) { return table.wireBytes(*row, only); },
             [&table, row](sd_bus_message* m, const PropertyNames* only) {
                 return table.appendAll(m, *row, only);
             }});
    }
}

template class Subtree<core::IommuUnit>;
template class Subtree<core::IommuGroup>;
template class Subtree<DeviceData>;
template class Subtree<QueueData>;
template class Subtree<ContextData>;

HostPublisher::HostPublisher(sd_bus* bus, std::string devRoot, const core::Engine& engine)
    : devRoot_(std::move(devRoot)), engine_(engine), units_(bus, names::kUnitPrefix),
      groups_(bus, names::kGroupPrefix), devices_(bus, names::kDevicePrefix),
      vdpa_(bus, names::kVdpaPrefix), queues_(bus, names::kQueuePrefix) {}

PreparedHost HostPublisher::prepare(std::shared_ptr<const core::Host> shared) const {
    const core::Host& host = *shared;
    Subtree<core::IommuUnit>::Rows units;
    for (const auto& u : host.units) {
        units.emplace(core::unitPath(u.name), u);
    }
    Subtree<core::IommuGroup>::Rows groups;
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
    Subtree<DeviceData>::Rows devices;
    for (const auto& d : host.devices) {
        DeviceData data{devRoot_, &engine_, shared, &d, nullptr, {}};
        if (auto it = links.find(d.address); it != links.end()) {
            data.links = it->second;
        }
        devices.emplace(core::devicePath(d.address), std::move(data));
    }
    Subtree<DeviceData>::Rows vdpa;
    for (const auto& v : host.vdpa) {
        vdpa.emplace(core::vdpaPath(v.name),
                     DeviceData{devRoot_, &engine_, shared, &kNoFunction, &v, {}});
    }
    Subtree<QueueData>::Rows queues;
    for (const auto& q : host.queues) {
        queues.emplace(core::queuePath(q.name), QueueData{devRoot_, &engine_, shared, &q});
    }
    PreparedHost out;
    out.units = units_.prepare(std::move(units));
    out.groups = groups_.prepare(std::move(groups));
    out.devices = devices_.prepare(std::move(devices));
    out.vdpa = vdpa_.prepare(std::move(vdpa));
    out.queues = queues_.prepare(std::move(queues));
    out.host = std::move(shared);
    return out;
}

void HostPublisher::publish(PreparedHost host, bool emit, Retired& retired) {
    // Objects that others point at appear first and go last.
    EmitFailures failed;
    queues_.removeGone(host.queues, emit, failed);
    vdpa_.removeGone(host.vdpa, emit, failed);
    devices_.removeGone(host.devices, emit, failed);
    groups_.removeGone(host.groups, emit, failed);
    units_.removeGone(host.units, emit, failed);
    retired.push_back(units_.addOrUpdate(host.units, emit, failed));
    retired.push_back(groups_.addOrUpdate(host.groups, emit, failed));
    retired.push_back(devices_.addOrUpdate(host.devices, emit, failed));
    retired.push_back(vdpa_.addOrUpdate(host.vdpa, emit, failed));
    retired.push_back(queues_.addOrUpdate(host.queues, emit, failed));
    if (failed.count > 0) {
        log::warning("cannot emit the host's changes: " + std::to_string(failed.count) +
                         " signals not sent, the first: " + std::strerror(-failed.firstError),
                     {{"OBJECT", failed.firstObject}});
    }
}

void HostPublisher::announceHolders(const std::vector<std::string>& devices) {
    for (const auto& id : devices) {
        if (!devices_.announce(core::devicePath(id), "HeldBy") &&
            !vdpa_.announce(core::vdpaPath(id), "HeldBy")) {
            (void)queues_.announce(core::queuePath(id), "HeldBy");
        }
    }
}

void HostPublisher::list(const std::string& start, uint32_t limit,
                         std::vector<ListedObject>& out) const {
    units_.list(start, limit, out);
    groups_.list(start, limit, out);
    devices_.list(start, limit, out);
    vdpa_.list(start, limit, out);
    queues_.list(start, limit, out);
}

} // namespace svad::dbus
