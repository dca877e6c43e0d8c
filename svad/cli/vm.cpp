// svactl's VM commands: reservations that live as long as a VM, not as the
// calling process (ReserveDevices, SetVmOwner, ReleaseVm).
#include "svad/cli/client.h"
#include "svad/cli/render.h"
#include "svad/core/parse.h"

#include <climits>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace svad::cli {

namespace {

const std::string kContextPrefix = std::string(names::kRootPath) + "/context/";
constexpr uint32_t kModeReserved = 3;

uint32_t parsePid(const std::string& text, const std::string& what) {
    auto pid = core::parseDec(text);
    if (!pid || *pid <= 0 || *pid > INT32_MAX) {
        fail(kExitUsage, what + " needs a process ID, not '" + text + "'");
    }
    return static_cast<uint32_t>(*pid);
}

// The reservations of `vm` as svad lists them (context objects in mode reserved).
Objects reservationsOf(ManagerProxy& manager, const Options& o, const std::string& vm) {
    Objects all;
    try {
        all = listObjects(manager, kContextPrefix, false);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot list the contexts", e);
    }
    Objects out;
    for (auto& [path, interfaces] : all) {
        auto it = interfaces.find(std::string(names::kContextInterface));
        if (it == interfaces.end()) {
            continue;
        }
        const auto& props = it->second;
        auto vmIt = props.find("Vm");
        auto modeIt = props.find("Mode");
        if (vmIt == props.end() || modeIt == props.end() ||
            !vmIt->second.containsValueOfType<std::string>() ||
            !modeIt->second.containsValueOfType<uint32_t>()) {
            continue;
        }
        if (vmIt->second.get<std::string>() == vm &&
            modeIt->second.get<uint32_t>() == kModeReserved) {
            out.emplace(path, interfaces);
        }
    }
    return out;
}

int runReserve(const Options& o) {
    std::string vm;
    std::optional<uint32_t> ownerPid;
    std::vector<std::string> devices;
    for (size_t i = 2; i < o.args.size(); ++i) {
        const std::string& a = o.args[i];
        if (a == "--owner-pid" && i + 1 < o.args.size()) {
            ownerPid = parsePid(o.args[++i], "--owner-pid");
        } else if (a.rfind("--owner-pid=", 0) == 0) {
            ownerPid = parsePid(a.substr(12), "--owner-pid");
        } else if (a.size() > 1 && a[0] == '-') {
            fail(kExitUsage, "unknown option '" + a + "' for vm reserve (try --help)");
        } else if (vm.empty()) {
            vm = a;
        } else {
            devices.push_back(normalizeAddress(a));
        }
    }
    if (vm.empty() || devices.empty()) {
        fail(kExitUsage, "vm reserve needs NAME and at least one DEVICE");
    }
    std::map<std::string, sdbus::Variant> options;
    if (ownerPid) {
        options["owner_pid"] = sdbus::Variant(*ownerPid);
    }
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    sdbus::ObjectPath context;
    std::map<std::string, sdbus::Variant> info;
    try {
        std::tie(context, info) = manager.ReserveDevices(vm, devices, options);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot reserve devices for vm '" + vm + "'", e);
    }
    if (o.json) {
        std::string out =
            "{\"context\":" + jsonString(context) + ",\"vm\":" + jsonString(vm) + ",\"info\":{";
        bool first = true;
        for (const auto& [k, v] : info) {
            out += (first ? "" : ",") + jsonString(k) + ":" + renderValue(k, v, true);
            first = false;
        }
        std::printf("%s}}\n", out.c_str());
        return 0;
    }
    std::printf("context  %s\n", context.c_str());
    if (ownerPid) {
        std::printf("owner    pid %u: svad releases the reservation when that process exits\n",
                    *ownerPid);
    } else {
        std::printf("owner    none yet: held for vm '%s' until `svactl vm release %s` (or until "
                    "the owner named by `svactl vm owner` exits)\n",
                    vm.c_str(), vm.c_str());
    }
    size_t width = 0;
    for (const auto& [k, v] : info) {
        width = std::max(width, k.size());
    }
    std::printf("info\n");
    for (const auto& [k, v] : info) {
        const std::string text = renderValue(k, v, false);
        std::printf("  %s:%s%s\n", k.c_str(), std::string(width - k.size() + 1, ' ').c_str(),
                    text.empty() ? "-" : text.c_str());
    }
    return 0;
}

int runOwner(const Options& o) {
    if (o.args.size() != 4) {
        fail(kExitUsage, "vm owner needs NAME and PID");
    }
    const std::string& vm = o.args[2];
    const uint32_t pid = parsePid(o.args[3], "vm owner");
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    std::vector<sdbus::ObjectPath> contexts;
    try {
        contexts = manager.SetVmOwner(vm, pid);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot hand vm '" + vm + "' to pid " + std::to_string(pid), e);
    }
    if (o.json) {
        std::string out = "{\"vm\":" + jsonString(vm) + ",\"owner_pid\":" + std::to_string(pid) +
                          ",\"contexts\":[";
        for (size_t i = 0; i < contexts.size(); ++i) {
            out += (i > 0 ? "," : "") + jsonString(contexts[i]);
        }
        std::printf("%s]}\n", out.c_str());
        return 0;
    }
    for (const auto& c : contexts) {
        std::printf("%s follows pid %u\n", c.c_str(), pid);
    }
    return 0;
}

int runRelease(const Options& o) {
    if (o.args.size() != 3) {
        fail(kExitUsage, "vm release needs NAME");
    }
    const std::string& vm = o.args[2];
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    uint32_t released = 0;
    try {
        released = manager.ReleaseVm(vm);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot release vm '" + vm + "'", e);
    }
    if (o.json) {
        std::printf("{\"vm\":%s,\"released\":%u}\n", jsonString(vm).c_str(), released);
    } else {
        std::printf("released %u reservation%s of vm '%s'\n", released, released == 1 ? "" : "s",
                    vm.c_str());
    }
    return 0;
}

int runShow(const Options& o) {
    if (o.args.size() != 3) {
        fail(kExitUsage, "vm show needs NAME");
    }
    const std::string& vm = o.args[2];
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    const Objects mine = reservationsOf(manager, o, vm);
    if (mine.empty()) {
        fail(kExitFailure, "vm '" + vm + "' holds no reservation");
    }
    (void)std::fputs(renderContexts(mine, o.json).c_str(), stdout);
    return 0;
}

} // namespace

int runVmCommand(const Options& o) {
    const std::string sub = o.args.size() > 1 ? o.args[1] : "";
    if (!o.command.empty()) {
        fail(kExitUsage, "unexpected '--' for vm");
    }
    if (sub == "reserve") {
        return runReserve(o);
    }
    if (sub == "owner") {
        return runOwner(o);
    }
    if (sub == "release") {
        return runRelease(o);
    }
    if (sub == "show") {
        return runShow(o);
    }
    fail(kExitUsage, "vm needs 'reserve NAME DEVICE...', 'owner NAME PID', 'release NAME' or "
                     "'show NAME'");
}

} // namespace svad::cli
