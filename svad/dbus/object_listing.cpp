#include "svad/dbus/object_listing.h"

#include <algorithm>

namespace svad::dbus {

size_t objectWireBytes(const std::string& path, const std::string& iface, size_t propertyBytes) {
    // The dict entry with the path, the array of interfaces, the svad interface's
    // entry with its name, then its properties.
    size_t n = wire::kAlign + wire::bytes(path) + (wire::kAlign + 4) + wire::kAlign +
               wire::bytes(iface) + propertyBytes;
    // sd-bus lists org.freedesktop.DBus.Peer, .Introspectable and .Properties
    // with an empty dict each.
    for (const char* standard : {"org.freedesktop.DBus.Peer", "org.freedesktop.DBus.Introspectable",
                                 "org.freedesktop.DBus.Properties"}) {
        n += wire::kAlign + wire::bytes(std::string(standard)) + wire::kAlign + 4;
    }
    return n;
}

PageRange pageRangeOf(const std::vector<ListedObject>& objects, const std::string& start,
                      uint32_t limit, const PropertyNames* only) {
    if (limit == 0 || limit > kMaxPageObjects) {
        limit = kMaxPageObjects;
    }
    auto it =
        std::lower_bound(objects.begin(), objects.end(), start,
                         [](const ListedObject& o, const std::string& s) { return o.path < s; });
    PageRange page;
    page.begin = static_cast<size_t>(it - objects.begin());
    size_t bytes = 0;
    for (; it != objects.end(); ++it) {
        const size_t n = static_cast<size_t>(it - objects.begin()) - page.begin;
        if (n >= limit) {
            break;
        }
        const size_t size = objectWireBytes(it->path, it->iface, it->wireBytes(only));
        if (n > 0 && bytes + size > kMaxPageBytes) {
            break;
        }
        bytes += size;
    }
    page.end = static_cast<size_t>(it - objects.begin());
    page.next = it == objects.end() ? std::string() : it->path;
    return page;
}

Page pageOf(const std::vector<ListedObject>& objects, const std::string& start, uint32_t limit,
            const PropertyNames* only) {
    PageRange range = pageRangeOf(objects, start, limit, only);
    Page page;
    for (size_t i = range.begin; i < range.end; ++i) {
        auto properties = objects[i].properties();
        for (auto it = properties.begin(); it != properties.end();) {
            it = wanted(only, it->first) ? std::next(it) : properties.erase(it);
        }
        page.objects[sdbus::ObjectPath(objects[i].path)][objects[i].iface] = std::move(properties);
    }
    page.next = std::move(range.next);
    return page;
}

int appendPage(sd_bus_message* m, const std::vector<ListedObject>& objects,
               const std::string& start, uint32_t limit, const PropertyNames* only) {
    const PageRange range = pageRangeOf(objects, start, limit, only);
    int r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");
    for (size_t i = range.begin; r >= 0 && i < range.end; ++i) {
        const ListedObject& o = objects[i];
        r = sd_bus_message_open_container(m, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}");
        r = r < 0 ? r : sd_bus_message_append_basic(m, SD_BUS_TYPE_OBJECT_PATH, o.path.c_str());
        r = r < 0 ? r : sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, "{sa{sv}}");
        r = r < 0 ? r : sd_bus_message_open_container(m, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}");
        r = r < 0 ? r : sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, o.iface.c_str());
        r = r < 0 ? r : o.append(m, only);
        r = r < 0 ? r : sd_bus_message_close_container(m);
        r = r < 0 ? r : sd_bus_message_close_container(m);
        r = r < 0 ? r : sd_bus_message_close_container(m);
    }
    r = r < 0 ? r : sd_bus_message_close_container(m);
    return r < 0 ? r : sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, range.next.c_str());
}

} // namespace svad::dbus
