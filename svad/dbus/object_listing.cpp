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

Page pageOf(const std::vector<ListedObject>& objects, const std::string& start, uint32_t limit) {
    if (limit == 0 || limit > kMaxPageObjects) {
        limit = kMaxPageObjects;
    }
    auto it =
        std::lower_bound(objects.begin(), objects.end(), start,
                         [](const ListedObject& o, const std::string& s) { return o.path < s; });
    Page page;
    size_t bytes = 0;
    for (; it != objects.end(); ++it) {
        if (page.objects.size() >= limit) {
            break;
        }
        const size_t size = objectWireBytes(it->path, it->iface, it->wireBytes());
        if (!page.objects.empty() && bytes + size > kMaxPageBytes) {
            break;
        }
        bytes += size;
        page.objects[sdbus::ObjectPath(it->path)][it->iface] = it->properties();
    }
    page.next = it == objects.end() ? std::string() : it->path;
    return page;
}

} // namespace svad::dbus
