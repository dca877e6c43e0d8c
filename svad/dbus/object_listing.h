// The object tree in pieces that fit in a bus message: the size a
// GetManagedObjects-shaped reply could reach, and the pages of ListObjects.
// dbus-daemon drops a connection that sends a message over its
// max_message_size (32 MiB by default on the system bus); svad never sends one.
#pragma once

#include "svad/dbus/sdbus_compat.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <set>
#include <string>
#include <string_view>
#include <systemd/sd-bus.h>
#include <tuple>
#include <type_traits>
#include <vector>

namespace svad::dbus {

// dbus-daemon's built-in and system-bus max_message_size.
inline constexpr size_t kBusMessageLimit = size_t{32} << 20;
// What svad allows itself for one reply: room under the limit for the header
// and for a bus configured a little tighter.
inline constexpr size_t kMaxReplyBytes = size_t{24} << 20;
// ListObjects pages.
inline constexpr uint32_t kMaxPageObjects = 1024;
inline constexpr size_t kMaxPageBytes = size_t{4} << 20;

// At least the bytes a value takes in a message, alignment included (each item
// counted with the 8 bytes of padding it may need at most).
namespace wire {
inline constexpr size_t kAlign = 8;
inline size_t bytes(const std::string& s) {
    return kAlign + 4 + s.size() + 1;
}
inline size_t bytes(const sdbus::ObjectPath& p) {
    return bytes(static_cast<const std::string&>(p));
}
template <typename T> std::enable_if_t<std::is_arithmetic_v<T>, size_t> bytes(const T& /*value*/) {
    return kAlign + sizeof(T);
}
template <typename T> size_t bytes(const std::vector<T>& items);
template <typename... Ts> size_t bytes(const sdbus::Struct<Ts...>& s) {
    return kAlign + std::apply([](const auto&... x) { return (size_t{0} + ... + bytes(x)); },
                               static_cast<const std::tuple<Ts...>&>(s));
}
template <typename T> size_t bytes(const std::vector<T>& items) {
    size_t n = kAlign + 4;
    for (const auto& item : items) {
        n += bytes(item);
    }
    return n;
}
} // namespace wire

// Appends typed values to an sd-bus message, as sdbus-c++ would; < 0 on error.
namespace append {
inline int value(sd_bus_message* m, const std::string& s) {
    return sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, s.c_str());
}
inline int value(sd_bus_message* m, const sdbus::ObjectPath& p) {
    return sd_bus_message_append_basic(m, SD_BUS_TYPE_OBJECT_PATH, p.c_str());
}
inline int value(sd_bus_message* m, bool b) {
    const int v = b ? 1 : 0;
    return sd_bus_message_append_basic(m, SD_BUS_TYPE_BOOLEAN, &v);
}
template <typename T> std::enable_if_t<std::is_arithmetic_v<T>, int> value(sd_bus_message* m, T v) {
    return sd_bus_message_append_basic(m, dbus::compat::signatureOf<T>()[0], &v);
}
template <typename T> int value(sd_bus_message* m, const std::vector<T>& items);
template <typename... Ts> int value(sd_bus_message* m, const sdbus::Struct<Ts...>& s) {
    const std::string sig = dbus::compat::signatureOf<sdbus::Struct<Ts...>>();
    int r =
        sd_bus_message_open_container(m, SD_BUS_TYPE_STRUCT, sig.substr(1, sig.size() - 2).c_str());
    if (r < 0) {
        return r;
    }
    std::apply([&](const auto&... x) { ((r = r < 0 ? r : value(m, x)), ...); },
               static_cast<const std::tuple<Ts...>&>(s));
    return r < 0 ? r : sd_bus_message_close_container(m);
}
template <typename T> int value(sd_bus_message* m, const std::vector<T>& items) {
    int r =
        sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, dbus::compat::signatureOf<T>().c_str());
    for (auto it = items.begin(); r >= 0 && it != items.end(); ++it) {
        r = value(m, *it);
    }
    return r < 0 ? r : sd_bus_message_close_container(m);
}
// A value in a variant, as GetAll and GetManagedObjects carry it.
template <typename T> int variant(sd_bus_message* m, const T& v) {
    int r = sd_bus_message_open_container(m, SD_BUS_TYPE_VARIANT,
                                          dbus::compat::signatureOf<T>().c_str());
    r = r < 0 ? r : value(m, v);
    return r < 0 ? r : sd_bus_message_close_container(m);
}
} // namespace append

// The names of the properties a listing carries; none: all of them.
using PropertyNames = std::set<std::string, std::less<>>;
inline bool wanted(const PropertyNames* only, std::string_view name) {
    return only == nullptr || only->find(name) != only->end();
}

// Visitors of an object's properties (visitProperties in objects.h).
// The properties as variants, as GetAll gives them.
struct VariantCollector {
    std::map<std::string, sdbus::Variant> properties;
    template <typename T> void operator()(const char* name, T value) {
        properties.emplace(name, sdbus::Variant(std::move(value)));
    }
};
// At least the bytes of the properties in an a{sv}: per entry, the name and the
// variant (its signature, counted as the longest a property has, and its value).
struct WireSizeCounter {
    static constexpr size_t kSignature = 1 + 16 + 1; // length, up to 16 characters, NUL
    const PropertyNames* only = nullptr;             // those, or all
    size_t bytes = wire::kAlign + 4;
    template <typename T> void operator()(const char* name, const T& value) {
        if (wanted(only, name)) {
            bytes +=
                wire::kAlign + wire::bytes(std::string(name)) + kSignature + wire::bytes(value);
        }
    }
};

// Every property of an object (one with visitProperties), as GetAll gives them,
// and at least the bytes they take in a message.
template <typename Object> std::map<std::string, sdbus::Variant> propertiesOf(Object& object) {
    VariantCollector c;
    object.visitProperties(c);
    return std::move(c.properties);
}
template <typename Object> size_t wireBytesOf(Object& object, const PropertyNames* only = nullptr) {
    WireSizeCounter c{only};
    object.visitProperties(c);
    return c.bytes;
}
// Appends them as an a{sv}, as GetAll gives them (only those in `only`, if set).
struct PropertyAppender {
    sd_bus_message* m;
    const PropertyNames* only = nullptr;
    int r = 0;
    template <typename T> void operator()(const char* name, const T& value) {
        if (!wanted(only, name)) {
            return;
        }
        r = r < 0 ? r : sd_bus_message_open_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv");
        r = r < 0 ? r : sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, name);
        r = r < 0 ? r : append::variant(m, value);
        r = r < 0 ? r : sd_bus_message_close_container(m);
    }
};
template <typename Object>
int appendPropertiesOf(sd_bus_message* m, Object& object, const PropertyNames* only = nullptr) {
    PropertyAppender a{m, only};
    a.r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
    object.visitProperties(a);
    return a.r < 0 ? a.r : sd_bus_message_close_container(m);
}

// At least the bytes of one object's entry in a GetManagedObjects reply: its path,
// its interface with properties of `propertyBytes`, and the standard interfaces
// sd-bus lists with it.
size_t objectWireBytes(const std::string& path, const std::string& iface, size_t propertyBytes);

// One listed object: its path, its interface, and how to read its properties.
struct ListedObject {
    std::string path;
    std::string iface;
    std::function<std::map<std::string, sdbus::Variant>()> properties;
    // At least the bytes of the properties (WireSizeCounter): those in `only`, or all.
    std::function<size_t(const PropertyNames* only)> wireBytes;
    // The properties as an a{sv}: those in `only`, or all of them.
    std::function<int(sd_bus_message*, const PropertyNames* only)> append;
};

using ObjectTree =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

struct Page {
    ObjectTree objects;
    std::string next; // "" at the end
};

// The page of `objects` (sorted by path) at or after `start`: at most `limit`
// objects (0 or over kMaxPageObjects: kMaxPageObjects) and at most
// kMaxPageBytes of the properties it carries (`only`, or all), but always at
// least one object when there is one.
struct PageRange {
    size_t begin = 0;
    size_t end = 0;   // one past the page's last object
    std::string next; // "" at the end
};
PageRange pageRangeOf(const std::vector<ListedObject>& objects, const std::string& start,
                      uint32_t limit, const PropertyNames* only = nullptr);
Page pageOf(const std::vector<ListedObject>& objects, const std::string& start, uint32_t limit,
            const PropertyNames* only = nullptr);
// The same page as a ListObjects reply's body, a{oa{sa{sv}}} then s, appended
// straight to `m`: no variant is made on the way.
// With `only`, each object carries those of its properties.
int appendPage(sd_bus_message* m, const std::vector<ListedObject>& objects,
               const std::string& start, uint32_t limit, const PropertyNames* only = nullptr);

} // namespace svad::dbus
