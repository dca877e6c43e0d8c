// What svactl's commands share: the options, the exit codes, the bus
// connection and the Manager proxy.
#pragma once

#include "svad/cli/render.h"
#include "svad/dbus/Manager_proxy.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <cstdint>
#include <memory>
#include <sdbus-c++/sdbus-c++.h>
#include <set>
#include <string>
#include <vector>

namespace svad::cli {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Options {
    std::string bus = "system";
    bool json = false;
    // The command and its own arguments (global options removed).
    std::vector<std::string> args;
    // `exec`: the command to run and its arguments, verbatim.
    std::vector<std::string> command;
};

class ManagerProxy final
    : public sdbus::ProxyInterfaces<org::svad::Svad1::Manager_proxy, sdbus::ObjectManager_proxy,
                                    sdbus::Properties_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& connection)
        : ProxyInterfaces(connection, dbus::compat::ServiceName(std::string(names::kService)),
                          sdbus::ObjectPath(std::string(names::kRootPath))) {
        registerProxy();
    }
    ~ManagerProxy() { unregisterProxy(); }

    // ObjectManager's and Properties' calls, keyed by plain strings (they hide
    // the sdbus-c++ proxies' own, whose keys are strong types on sdbus-c++ 2).
    VariantProperties
    GetAll(const std::string& interface) { // NOLINT(readability-identifier-naming)
        return dbus::compat::allProperties(getProxy(), interface);
    }
    sdbus::IConnection& connection() { return getProxy().getConnection(); }

private:
    void onInterfacesAdded(const sdbus::ObjectPath&,
                           const dbus::compat::InterfacesAndProperties&) override {}
    void onInterfacesRemoved(const sdbus::ObjectPath&,
                             const dbus::compat::InterfaceNames&) override {}
    void onPropertiesChanged(const dbus::compat::InterfaceName&,
                             const dbus::compat::PropertyValues&,
                             const dbus::compat::PropertyNames&) override {}
};

// Prints "svactl: MESSAGE" (one line) on stderr and exits with `code`.
[[noreturn]] void fail(int code, const std::string& message);
// A failed call to svad, as one line: "WHAT: MESSAGE (ErrorName)"; exits 1.
[[noreturn]] void failCall(const Options& o, const std::string& what, const sdbus::Error& e);
// "the system bus", "unix:path=/run/x"
std::string busLabel(const std::string& bus);
std::unique_ptr<sdbus::IConnection> connectBus(const std::string& bus);
// The objects whose path starts with `prefix` (at most `max`), read page by page
// with ListObjects, so that any host fits in bus messages; `progress` shows the
// count on a terminal. With `only`, properties of other names are skipped
// unread (a table's columns need a few of them).
Objects listObjects(ManagerProxy& manager, const std::string& prefix, bool progress,
                    size_t max = SIZE_MAX, const std::set<std::string>* only = nullptr);
// A PCI address as typed (6a:01.0) completed to 0000:6a:01.0; anything else unchanged.
std::string normalizeAddress(const std::string& id);

// The context commands: alloc, release, contexts, pasid, exec.
bool isContextCommand(const std::string& cmd);
// The value-taking options of the context commands (--vm NAME ...).
bool contextOptionTakesValue(const std::string& option);
int runContextCommand(const Options& o);
// The VM commands: vm reserve, vm owner, vm release, vm show.
int runVmCommand(const Options& o);
// libvirt's qemu hook (packaging/libvirt/svad-hook): libvirt-hook NAME OPERATION SUB-OPERATION.
int runLibvirtHook(const Options& o);

// svactl monitor [--json]: prints svad's events until interrupted (monitor.cpp).
int runMonitor(const Options& o);

} // namespace svad::cli
