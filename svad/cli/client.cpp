#include "svad/cli/client.h"

#include "svad/cli/progress.h"
#include "svad/core/parse.h"
#include "svad/dbus/connect.h"

#include <cstdio>
#include <cstdlib>

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

Objects listObjects(ManagerProxy& manager, const std::string& prefix, bool progress, size_t max) {
    Objects out;
    Progress shown("reading svad's objects", progress);
    std::string start = prefix;
    for (;;) {
        auto [page, next] = manager.ListObjects(start, 0);
        if (page.empty()) {
            break;
        }
        for (auto& [path, ifaces] : page) {
            if (path.rfind(prefix, 0) != 0 || out.size() >= max) {
                return out; // sorted: past the prefix
            }
            out.emplace(path, std::move(ifaces));
        }
        shown.set("reading svad's objects: " + std::to_string(out.size()));
        if (next.empty() || next.rfind(prefix, 0) != 0) {
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
