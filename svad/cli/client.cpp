#include "svad/cli/client.h"

#include "svad/cli/progress.h"
#include "svad/core/parse.h"
#include "svad/dbus/connect.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <systemd/sd-bus.h>

namespace svad::cli {

namespace {

// One line: newlines in a daemon's message would break the one-line rule.
std::string oneLine(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
        s.pop_back();
    }
    for (char& c : s) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    return s;
}

} // namespace

void fail(int code, const std::string& message) {
    (void)std::fflush(stdout);
    if (Progress::terminal()) {
        (void)std::fputs("\r\033[K", stderr); // a progress line drawn there goes
    }
    (void)std::fprintf(stderr, "svactl: %s\n", oneLine(message).c_str());
    std::exit(code);
}

std::string busLabel(const std::string& bus) {
    return bus == "system" || bus == "session" ? "the " + bus + " bus" : bus;
}

void failCall(const Options& o, const std::string& what, const sdbus::Error& e) {
    const std::string& name = e.getName();
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
        name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
        fail(kExitFailure, "svad is not running (nobody owns " + std::string(names::kService) +
                               " on " + busLabel(o.bus) + ")");
    }
    if (name == "org.freedesktop.DBus.Error.UnknownMethod") {
        fail(kExitFailure, what + ": this svad does not offer it (" + e.getMessage() + ")");
    }
    // org.svad.Svad1.Error.NotFound -> NotFound
    std::string shortName = name;
    const std::string prefix = "org.svad.Svad1.Error.";
    if (shortName.rfind(prefix, 0) == 0) {
        shortName = shortName.substr(prefix.size());
    }
    fail(kExitFailure, what + ": " + e.getMessage() + " (" + shortName + ")");
}

std::unique_ptr<sdbus::IConnection> connectBus(const std::string& bus) {
    try {
        return dbus::connectBus(bus);
    } catch (const sdbus::Error& e) {
        fail(kExitFailure, "cannot connect to " + busLabel(bus) + ": " + e.getMessage());
    }
}

namespace {

// One ListObjects page, decoded straight from the reply into `out` (objects
// from `prefix` on, at most `max` in all); the start of the next page, or
// "" when the listing ends here.
std::string readPage(sd_bus* bus, const std::string& start, const std::string& prefix, size_t max,
                     const std::set<std::string>* only, Objects& out) {
    // With `only`, svad cuts each object's properties to those names; an svad
    // that does not know that call yet sends them all.
    static bool cutBySvad = true;
    const bool cut = only != nullptr && cutBySvad;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* call = nullptr;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_message_new_method_call(bus, &call, std::string(names::kService).c_str(),
                                           std::string(names::kRootPath).c_str(),
                                           std::string(names::kManagerInterface).c_str(),
                                           cut ? "ListObjectsWithProperties" : "ListObjects");
    r = r < 0 ? r : sd_bus_message_append(call, "su", start.c_str(), uint32_t{0});
    if (cut) {
        std::vector<const char*> names;
        for (const auto& n : *only) {
            names.push_back(n.c_str());
        }
        names.push_back(nullptr);
        r = r < 0 ? r : sd_bus_message_append_strv(call, const_cast<char**>(names.data()));
    }
    r = r < 0 ? r : sd_bus_call(bus, call, 0, &error, &reply);
    sd_bus_message_unref(call);
    if (r < 0 && cut && sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_METHOD) > 0) {
        sd_bus_error_free(&error);
        cutBySvad = false;
        return readPage(bus, start, prefix, max, only, out);
    }
    if (r < 0) {
        const sdbus::Error e = dbus::compat::makeError(
            error.name != nullptr ? error.name : "org.freedesktop.DBus.Error.Failed",
            error.message != nullptr ? error.message : std::strerror(-r));
        sd_bus_error_free(&error);
        throw e;
    }
    struct Unref {
        sd_bus_message* m;
        ~Unref() { sd_bus_message_unref(m); }
    } hold{reply};
    auto check = [](int rc) {
        if (rc < 0) {
            throw std::runtime_error(std::string("svad's ListObjects reply is malformed: ") +
                                     std::strerror(-rc));
        }
        return rc;
    };
    check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}"));
    bool past = false;
    while (!past &&
           check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}")) > 0) {
        const char* path = nullptr;
        check(sd_bus_message_read_basic(reply, SD_BUS_TYPE_OBJECT_PATH, &path));
        if (std::string_view(path).rfind(prefix, 0) != 0 || out.size() >= max) {
            past = true; // sorted: past the prefix
            break;
        }
        auto& interfaces = out[sdbus::ObjectPath(path)];
        check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{sa{sv}}"));
        while (check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}")) > 0) {
            const char* iface = nullptr;
            check(sd_bus_message_read_basic(reply, SD_BUS_TYPE_STRING, &iface));
            auto& props = interfaces[iface];
            check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "{sv}"));
            while (check(sd_bus_message_enter_container(reply, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
                const char* name = nullptr;
                check(sd_bus_message_read_basic(reply, SD_BUS_TYPE_STRING, &name));
                if (only != nullptr && only->count(name) == 0) {
                    check(sd_bus_message_skip(reply, "v"));
                } else {
                    props.insert_or_assign(name, Value::read(reply));
                }
                check(sd_bus_message_exit_container(reply));
            }
            check(sd_bus_message_exit_container(reply));
            check(sd_bus_message_exit_container(reply));
        }
        check(sd_bus_message_exit_container(reply));
        check(sd_bus_message_exit_container(reply));
    }
    if (past) {
        return {};
    }
    check(sd_bus_message_exit_container(reply));
    const char* next = nullptr;
    check(sd_bus_message_read_basic(reply, SD_BUS_TYPE_STRING, &next));
    return next != nullptr ? next : "";
}

} // namespace

Objects listObjects(ManagerProxy& manager, const std::string& prefix, bool progress, size_t max,
                    const std::set<std::string>* only) {
    Objects out;
    Progress shown("reading svad's objects", progress);
    sd_bus* bus = dbus::compat::rawBus(manager.connection());
    std::string start = prefix;
    for (;;) {
        const size_t before = out.size();
        const std::string next = readPage(bus, start, prefix, max, only, out);
        shown.set("reading svad's objects: " + std::to_string(out.size()));
        if (out.size() == before || next.empty() || next.rfind(prefix, 0) != 0) {
            break;
        }
        start = next;
    }
    return out;
}

std::string normalizeAddress(const std::string& id) {
    if (id.size() == 7 && core::isPciAddress("0000:" + id)) {
        return "0000:" + id;
    }
    return id;
}

} // namespace svad::cli
