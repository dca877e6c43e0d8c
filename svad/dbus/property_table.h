// An interface's properties served straight from a model object: each one a
// function of the object's data, appended to a message as its XML type says,
// with no sdbus-c++ object and no variant in between. The table takes the
// names, signatures and flags from the interface's XML (property_spec.h) and
// checks, when it is made, that every property there has a function of that
// type and no function is left over: a mismatch is a bug in svad and stops it.
#pragma once

#include "svad/dbus/object_listing.h"
#include "svad/dbus/property_spec.h"
#include "svad/dbus/sdbus_compat.h"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <new>
#include <sdbus-c++/sdbus-c++.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <systemd/sd-bus.h>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace svad::dbus {

// What a table can do with one property of a `Data`.
template <typename Data> struct PropertyEntry {
    const char* name;
    std::string signature;
    int (*append)(sd_bus_message*, const Data&); // the value
    int (*appendVariant)(sd_bus_message*, const Data&);
    size_t (*wireBytes)(const Data&);        // at least its bytes in a message
    sdbus::Variant (*variant)(const Data&);  // for tests and comparisons
    bool (*equal)(const Data&, const Data&); // the same value in both
};

namespace detail {
template <typename Data, typename F> struct Thunks {
    using Value = std::decay_t<std::invoke_result_t<F, const Data&>>;
    static int append(sd_bus_message* m, const Data& d) { return append::value(m, F{}(d)); }
    static int appendVariant(sd_bus_message* m, const Data& d) {
        return append::variant(m, Value(F{}(d)));
    }
    static size_t wireBytes(const Data& d) { return wire::bytes(Value(F{}(d))); }
    static sdbus::Variant variant(const Data& d) { return sdbus::Variant(Value(F{}(d))); }
    static bool equal(const Data& a, const Data& b) { return F{}(a) == F{}(b); }
};
} // namespace detail

// One property: `f` is a captureless lambda of `const Data&`.
template <typename Data, typename F> PropertyEntry<Data> property(const char* name, F /*f*/) {
    using T = detail::Thunks<Data, F>;
    return {name,          dbus::compat::signatureOf<typename T::Value>(),
            &T::append,    &T::appendVariant,
            &T::wireBytes, &T::variant,
            &T::equal};
}

template <typename Data> class PropertyTable {
public:
    template <size_t N>
    PropertyTable(const char* interface, const PropertySpec (&specs)[N],
                  std::vector<PropertyEntry<Data>> entries)
        : PropertyTable(interface, specs, kNoSignals, std::move(entries)) {}
    // The interface's signals go in the vtable too (for introspection); they are
    // sent with sd_bus_emit_signal.
    template <size_t N, size_t M>
    PropertyTable(const char* interface, const PropertySpec (&specs)[N],
                  const SignalSpec (&signals)[M], std::vector<PropertyEntry<Data>> entries)
        : interface_(interface) {
        std::map<std::string_view, PropertyEntry<Data>> byName;
        for (auto& e : entries) {
            if (!byName.emplace(e.name, e).second) {
                throw std::logic_error(std::string(interface) + "." + e.name + " given twice");
            }
        }
        vtable_.push_back(start());
        for (const PropertySpec& s : specs) {
            if (s.name == nullptr) {
                continue;
            }
            auto it = byName.find(s.name);
            if (it == byName.end()) {
                throw std::logic_error(std::string(interface) + "." + s.name +
                                       " is in the XML but has no value");
            }
            if (it->second.signature != s.signature) {
                throw std::logic_error(std::string(interface) + "." + s.name + " is '" +
                                       s.signature + "' in the XML but '" + it->second.signature +
                                       "' here");
            }
            index_.emplace(s.name, entries_.size());
            entries_.push_back(it->second);
            announced_.push_back((s.flags & (SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE |
                                             SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION)) != 0);
            byName.erase(it);
            vtable_.push_back(propertyEntry(s, &PropertyTable::get));
        }
        if (!byName.empty()) {
            throw std::logic_error(std::string(interface) + "." + byName.begin()->second.name +
                                   " is not in the XML");
        }
        for (const SignalSpec& s : signals) {
            if (s.name != nullptr) {
                signals_.push_back(s);
                vtable_.push_back(signalEntry(s));
            }
        }
        sd_bus_vtable end{};
        end.type = _SD_BUS_VTABLE_END;
        vtable_.push_back(end);
    }
    PropertyTable(const PropertyTable&) = delete;
    PropertyTable& operator=(const PropertyTable&) = delete;

    const char* interface() const { return interface_; }
    // In the XML's order.
    const std::vector<PropertyEntry<Data>>& entries() const { return entries_; }
    const PropertyEntry<Data>* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &entries_[it->second];
    }
    // The signal `name` as the XML declares it, or null.
    const SignalSpec* signal(std::string_view name) const {
        for (const auto& s : signals_) {
            if (name == s.name) {
                return &s;
            }
        }
        return nullptr;
    }
    // The sd-bus vtable; its getters take a `const Data*` as their userdata.
    const sd_bus_vtable* vtable() const { return vtable_.data(); }

    // Appends an a{sv} of every property of `d` (those in `only`, if set).
    int appendAll(sd_bus_message* m, const Data& d, const PropertyNames* only = nullptr) const {
        int r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
        for (auto it = entries_.begin(); r >= 0 && it != entries_.end(); ++it) {
            if (!wanted(only, it->name)) {
                continue;
            }
            r = sd_bus_message_open_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv");
            r = r < 0 ? r : sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, it->name);
            r = r < 0 ? r : it->appendVariant(m, d);
            r = r < 0 ? r : sd_bus_message_close_container(m);
        }
        return r < 0 ? r : sd_bus_message_close_container(m);
    }
    std::map<std::string, sdbus::Variant> variants(const Data& d) const {
        std::map<std::string, sdbus::Variant> out;
        for (const auto& e : entries_) {
            out.emplace(e.name, e.variant(d));
        }
        return out;
    }
    // The names of the properties whose values differ between `a` and `b` and whose
    // changes are announced (EmitsChangedSignal), in the XML's order, then a null:
    // what a PropertiesChanged from `a` to `b` names.
    std::vector<const char*> changed(const Data& a, const Data& b) const {
        std::vector<const char*> out;
        for (size_t i = 0; i < entries_.size(); ++i) {
            if (announced_[i] && !entries_[i].equal(a, b)) {
                out.push_back(entries_[i].name);
            }
        }
        out.push_back(nullptr);
        return out;
    }
    // At least the bytes of appendAll's a{sv} (as WireSizeCounter counts them).
    size_t wireBytes(const Data& d, const PropertyNames* only = nullptr) const {
        size_t n = wire::kAlign + 4;
        for (const auto& e : entries_) {
            if (!wanted(only, e.name)) {
                continue;
            }
            n += wire::kAlign + wire::bytes(std::string(e.name)) + WireSizeCounter::kSignature +
                 e.wireBytes(d);
        }
        return n;
    }

private:
    static sd_bus_vtable start() {
        sd_bus_vtable v{};
        v.type = _SD_BUS_VTABLE_START;
        v.flags = 0;
        v.x.start.element_size = sizeof(sd_bus_vtable);
        v.x.start.features = _SD_BUS_VTABLE_PARAM_NAMES;
        v.x.start.vtable_format_reference = &sd_bus_object_vtable_format;
        return v;
    }
    static sd_bus_vtable propertyEntry(const PropertySpec& s, sd_bus_property_get_t get) {
        sd_bus_vtable v{};
        v.type = _SD_BUS_VTABLE_PROPERTY;
        v.flags = s.flags;
        v.x.property.member = s.name;
        v.x.property.signature = s.signature;
        v.x.property.get = get;
        v.x.property.set = nullptr;
        v.x.property.offset = 0;
        return v;
    }
    static sd_bus_vtable signalEntry(const SignalSpec& s) {
        sd_bus_vtable v{};
        v.type = _SD_BUS_VTABLE_SIGNAL;
        v.flags = 0;
        v.x.signal.member = s.name;
        v.x.signal.signature = s.signature;
        v.x.signal.names = s.names;
        return v;
    }
    static int get(sd_bus* bus, const char* path, const char* interface, const char* property,
                   sd_bus_message* reply, void* userdata, sd_bus_error* error);

    const char* interface_;
    std::vector<PropertyEntry<Data>> entries_;
    std::vector<bool> announced_; // beside entries_: EmitsChangedSignal true or invalidates
    std::vector<SignalSpec> signals_;
    std::unordered_map<std::string_view, size_t> index_;
    std::vector<sd_bus_vtable> vtable_;
};

// The one table of each kind of data (defined beside the data).
template <typename Data> const PropertyTable<Data>& propertyTable();

template <typename Data>
int PropertyTable<Data>::get(sd_bus* /*bus*/, const char* /*path*/, const char* /*interface*/,
                             const char* property, sd_bus_message* reply, void* userdata,
                             sd_bus_error* error) {
    const PropertyEntry<Data>* e = propertyTable<Data>().find(property);
    if (e == nullptr || userdata == nullptr) {
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property);
    }
    try { // sd-bus calls this from C: nothing may be thrown through it
        return e->append(reply, *static_cast<const Data*>(userdata));
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    } catch (const std::exception& ex) {
        return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "%s", ex.what());
    }
}

} // namespace svad::dbus
