// svactl monitor: prints what svad announces as it happens, one line per
// event, the way `udevadm monitor` does: objects added and removed (hotplug,
// contexts), properties changed, contexts released or degraded.
#include "svad/cli/client.h"
#include "svad/cli/render.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace svad::cli {

namespace {

// "1732540800.123456", as udevadm monitor stamps its lines.
std::string timestamp() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    char buf[32];
    (void)std::snprintf(buf, sizeof buf, "%lld.%06ld", static_cast<long long>(ts.tv_sec),
                        ts.tv_nsec / 1000);
    return buf;
}

std::string joinedNames(const std::vector<std::string>& names, bool json) {
    std::string out;
    for (const auto& n : names) {
        if (json) {
            out += (out.empty() ? "" : ",") + jsonString(n);
        } else {
            out += (out.empty() ? "" : " ") + n;
        }
    }
    return json ? "[" + out + "]" : out;
}

std::string renderChanged(const std::string& iface,
                          const std::map<std::string, sdbus::Variant>& changed,
                          const std::vector<std::string>& invalidated, bool json) {
    std::string out;
    for (const auto& [name, value] : changed) {
        if (json) {
            out += (out.empty() ? "" : ",") + jsonString(name) + ":" +
                   renderValue(name, value, true, iface);
        } else {
            out += (out.empty() ? "" : " ") + name + "=" + renderValue(name, value, false, iface);
        }
    }
    for (const auto& name : invalidated) {
        if (json) {
            out += (out.empty() ? "" : ",") + jsonString(name) + ":null";
        } else {
            out += (out.empty() ? "" : " ") + name + "=(changed)";
        }
    }
    return json ? "{" + out + "}" : out;
}

// Prints one event: a text line, or a JSON object with "event", "path" and more.
void emitLine(bool json, const std::string& event, const std::string& path,
              const std::vector<std::pair<std::string, std::string>>& jsonFields,
              const std::string& text) {
    std::string line;
    if (json) {
        line = "{\"time\":" + timestamp() + ",\"event\":" + jsonString(event) +
               ",\"path\":" + jsonString(path);
        for (const auto& [k, v] : jsonFields) {
            line += "," + jsonString(k) + ":" + v;
        }
        line += "}";
    } else {
        char head[64];
        (void)std::snprintf(head, sizeof head, "SVAD [%s] %-9s ", timestamp().c_str(),
                            event.c_str());
        line = head + path + (text.empty() ? "" : " " + text);
    }
    line += '\n';
    (void)std::fwrite(line.data(), 1, line.size(), stdout);
    (void)std::fflush(stdout);
}

void onSignal(sdbus::Message& msg, bool json) {
    const std::string member = dbus::compat::memberOf(msg);
    const std::string path = msg.getPath();
    if (member == "InterfacesAdded") {
        sdbus::ObjectPath object;
        std::map<std::string, std::map<std::string, sdbus::Variant>> ifaces;
        msg >> object >> ifaces;
        std::vector<std::string> names;
        for (const auto& [name, props] : ifaces) {
            if (name.rfind("org.svad.Svad1.", 0) == 0) {
                names.push_back(name);
            }
        }
        emitLine(json, "add", object, {{"interfaces", joinedNames(names, true)}},
                 "(" + joinedNames(names, false) + ")");
    } else if (member == "InterfacesRemoved") {
        sdbus::ObjectPath object;
        std::vector<std::string> names;
        msg >> object >> names;
        std::vector<std::string> ours;
        for (const auto& n : names) {
            if (n.rfind("org.svad.Svad1.", 0) == 0) {
                ours.push_back(n);
            }
        }
        emitLine(json, "remove", object, {{"interfaces", joinedNames(ours, true)}},
                 "(" + joinedNames(ours, false) + ")");
    } else if (member == "PropertiesChanged") {
        std::string iface;
        std::map<std::string, sdbus::Variant> changed;
        std::vector<std::string> invalidated;
        msg >> iface >> changed >> invalidated;
        emitLine(json, "change", path,
                 {{"interface", jsonString(iface)},
                  {"properties", renderChanged(iface, changed, invalidated, true)}},
                 iface + " " + renderChanged(iface, changed, invalidated, false));
    } else if (member == "Released" || member == "Degraded") {
        std::string reason;
        msg >> reason;
        std::string event = member == "Released" ? "released" : "degraded";
        emitLine(json, event, path, {{"reason", jsonString(reason)}}, "reason=\"" + reason + "\"");
    }
}

} // namespace

int runMonitor(const Options& o) {
    for (size_t i = 1; i < o.args.size(); ++i) {
        fail(kExitUsage, "unexpected argument '" + o.args[i] + "' for monitor");
    }
    if (!o.command.empty()) {
        fail(kExitUsage, "unexpected '--' for monitor");
    }
    auto connection = connectBus(o.bus);
    const bool json = o.json;
    const std::string service(names::kService);
    // Everything svad emits; and svad itself coming and going.
    auto slot = dbus::compat::addMatch(
        *connection, "type='signal',sender='" + service + "'", [json](sdbus::Message& msg) {
            try {
                onSignal(msg, json);
            } catch (const sdbus::Error& e) {
                (void)std::fprintf(stderr, "svactl: unreadable %s signal: %s\n",
                                   dbus::compat::memberOf(msg).c_str(), e.getMessage().c_str());
            }
        });
    auto owner = dbus::compat::addMatch(
        *connection,
        "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" + service +
            "'",
        [json](sdbus::Message& msg) {
            std::string name;
            std::string oldOwner;
            std::string newOwner;
            msg >> name >> oldOwner >> newOwner;
            emitLine(json, newOwner.empty() ? "stopped" : "started", std::string(names::kRootPath),
                     {{"owner", jsonString(newOwner)}},
                     newOwner.empty() ? "" : "(" + newOwner + ")");
        });
    (void)std::fprintf(stderr, "svactl monitor: printing the events of %s on %s\n", service.c_str(),
                       busLabel(o.bus).c_str());
    (void)std::fflush(stderr);
    connection->enterEventLoop();
    return 0;
}

} // namespace svad::cli
