// svactl: the command-line client of svad, over the generated proxies.
#include "svad/cli/render.h"
#include "svad/core/parse.h"
#include "svad/core/paths.h"
#include "svad/dbus/Manager_proxy.h"
#include "svad/names.h"
#include "svad/version.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace {

using svad::cli::Objects;
using svad::cli::Properties;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

class ManagerProxy final
    : public sdbus::ProxyInterfaces<org::svad::Svad1::Manager_proxy, sdbus::ObjectManager_proxy,
                                    sdbus::Properties_proxy> {
public:
    ManagerProxy(sdbus::IConnection& connection)
        : ProxyInterfaces(connection, std::string(svad::names::kService),
                          std::string(svad::names::kRootPath)) {
        registerProxy();
    }
    ~ManagerProxy() { unregisterProxy(); }

private:
    void onInterfacesAdded(const sdbus::ObjectPath&,
                           const std::map<std::string, Properties>&) override {}
    void onInterfacesRemoved(const sdbus::ObjectPath&, const std::vector<std::string>&) override {}
    void onPropertiesChanged(const std::string&, const Properties&,
                             const std::vector<std::string>&) override {}
};

struct Options {
    std::string bus = "system";
    bool json = false;
    std::vector<std::string> args;
};

void printHelp() {
    std::printf("Usage: svactl [--bus session|system|ADDRESS] [--json] COMMAND [ARG]\n"
                "Inspects what svad sees on this host.\n\n"
                "Commands:\n"
                "  status          svad's version, backend and counts\n"
                "  devices         PCI functions (--pasid: only PASID-capable ones)\n"
                "  vdpa            vDPA devices\n"
                "  groups          IOMMU groups and their viability\n"
                "  units           IOMMU units and their capabilities\n"
                "  queues          SIOV (idxd) work queues\n"
                "  show ID         everything about one object: a PCI address (0000:6a:01.0\n"
                "                  or 6a:01.0), a vDPA device, a queue (wq0.0), a unit\n"
                "                  (dmar0) or a group number\n"
                "  rescan          re-read the host and wait until svad has published it\n\n"
                "Options:\n"
                "  --bus BUS       the bus svad serves on (default: system)\n"
                "  --json          machine-readable output\n"
                "  --version       print the version and exit\n");
}

[[noreturn]] void fail(int code, const std::string& message) {
    std::fprintf(stderr, "svactl: %s\n", message.c_str());
    std::exit(code);
}

Options parseArgs(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            printHelp();
            std::exit(0);
        } else if (a == "--version") {
            std::printf("svactl %s\n", SVAD_VERSION);
            std::exit(0);
        } else if (a == "--json") {
            o.json = true;
        } else if (a == "--bus") {
            if (i + 1 >= argc) {
                fail(kExitUsage, "--bus needs a value");
            }
            o.bus = argv[++i];
        } else if (a.rfind("--bus=", 0) == 0) {
            o.bus = a.substr(6);
        } else {
            o.args.push_back(a);
        }
    }
    if (o.args.empty()) {
        fail(kExitUsage, "no command given (try --help)");
    }
    return o;
}

std::unique_ptr<sdbus::IConnection> connectBus(const std::string& bus) {
    try {
        if (bus == "system") {
            return sdbus::createSystemBusConnection();
        }
        if (bus == "session") {
            return sdbus::createSessionBusConnection();
        }
        return sdbus::createSessionBusConnectionWithAddress(bus);
    } catch (const sdbus::Error& e) {
        fail(kExitFailure, "cannot connect to the " +
                               (bus == "system" || bus == "session" ? bus + " bus" : bus) + ": " +
                               e.getMessage());
    }
}

// A PCI address as typed (6a:01.0) completed to 0000:6a:01.0.
std::string normalizeAddress(const std::string& id) {
    if (id.size() == 7 && svad::core::isPciAddress("0000:" + id)) {
        return "0000:" + id;
    }
    return id;
}

std::optional<std::string> findObject(const Objects& objects, const std::string& rawId) {
    const std::string id = normalizeAddress(rawId);
    std::vector<std::string> candidates = {svad::core::devicePath(id), svad::core::vdpaPath(id),
                                           svad::core::queuePath(id), svad::core::unitPath(id)};
    if (auto n = svad::core::parseDec(id); n && *n >= 0 && *n <= UINT32_MAX) {
        candidates.push_back(svad::core::groupPath(static_cast<uint32_t>(*n)));
    }
    for (const auto& c : candidates) {
        if (objects.count(sdbus::ObjectPath(c)) != 0) {
            return c;
        }
    }
    return std::nullopt;
}

int run(const Options& o) {
    const std::string& cmd = o.args[0];
    static const std::vector<std::string> kListings = {"devices", "vdpa", "groups", "units",
                                                       "queues"};
    const bool listing = std::find(kListings.begin(), kListings.end(), cmd) != kListings.end();
    if (!listing && cmd != "status" && cmd != "show" && cmd != "rescan") {
        fail(kExitUsage, "unknown command '" + cmd + "' (try --help)");
    }
    if (cmd == "show" && o.args.size() != 2) {
        fail(kExitUsage, "show needs exactly one ID (a PCI address, vDPA device, queue, unit "
                         "or group)");
    }
    bool pasidOnly = false;
    for (size_t i = 1; i < o.args.size(); ++i) {
        if (cmd == "devices" && o.args[i] == "--pasid") {
            pasidOnly = true;
        } else if (cmd != "show") {
            fail(kExitUsage, "unexpected argument '" + o.args[i] + "' for " + cmd);
        }
    }

    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);

    if (cmd == "rescan") {
        manager.Rescan();
        if (!o.json) {
            std::printf("rescanned: %u devices, %u groups, %u units, %u queues\n",
                        manager.DeviceCount(), manager.GroupCount(), manager.UnitCount(),
                        manager.QueueCount());
        } else {
            std::printf("{\"rescanned\":true}\n");
        }
        return 0;
    }
    if (cmd == "status") {
        auto props = manager.GetAll(std::string(svad::names::kManagerInterface));
        std::fputs(svad::cli::renderProperties(props, o.json).c_str(), stdout);
        return 0;
    }

    Objects objects = manager.GetManagedObjects();
    if (cmd == "show") {
        auto path = findObject(objects, o.args[1]);
        if (!path) {
            fail(kExitFailure,
                 "no device, vDPA device, queue, unit or group named '" + o.args[1] + "'");
        }
        const auto& ifaces = objects.at(sdbus::ObjectPath(*path));
        for (const auto& [iface, props] : ifaces) {
            if (iface.rfind("org.svad.Svad1.", 0) == 0) {
                std::fputs(svad::cli::renderProperties(props, o.json, *path).c_str(), stdout);
            }
        }
        return 0;
    }
    std::fputs(svad::cli::renderListing(cmd, objects, o.json, pasidOnly).c_str(), stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    Options o = parseArgs(argc, argv);
    try {
        return run(o);
    } catch (const sdbus::Error& e) {
        const std::string& name = e.getName();
        if (name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
            name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
            fail(kExitFailure,
                 "svad is not running (nobody owns " + std::string(svad::names::kService) + " on " +
                     (o.bus == "system" || o.bus == "session" ? "the " + o.bus + " bus" : o.bus) +
                     ")");
        }
        fail(kExitFailure, name + ": " + e.getMessage());
    }
}
