// svactl: the command-line client of svad, over the generated proxies.
#include "svad/cli/client.h"
#include "svad/cli/progress.h"
#include "svad/cli/render.h"
#include "svad/core/parse.h"
#include "svad/core/paths.h"
#include "svad/names.h"
#include "svad/version.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace {

using svad::cli::connectBus;
using svad::cli::fail;
using svad::cli::kExitFailure;
using svad::cli::kExitUsage;
using svad::cli::ManagerProxy;
using svad::cli::normalizeAddress;
using svad::cli::Objects;
using svad::cli::Options;

void printHelp() {
    std::printf(
        "Usage: svactl [--bus session|system|ADDRESS] [--json] COMMAND [ARG...]\n"
        "Inspects what svad sees on this host and allocates contexts for VMs.\n\n"
        "Commands:\n"
        "  status          svad's version, backend, kernel features and counts\n"
        "  devices         PCI functions (--pasid: only PASID-capable ones)\n"
        "  vdpa            vDPA devices\n"
        "  groups          IOMMU groups and their viability\n"
        "  units           IOMMU units and their capabilities\n"
        "  queues          SIOV (idxd) work queues\n"
        "  show ID         everything about one object: a PCI address (0000:6a:01.0\n"
        "                  or 6a:01.0), a vDPA device, a queue (wq0.0), a unit\n"
        "                  (dmar0), a group number, a context (context/N) or an\n"
        "                  object path\n"
        "  rescan          re-read the host and wait until svad has published it\n"
        "  plugins         the policy plugins svad loaded, in the order it asks them,\n"
        "                  and the files it refused with the reason\n"
        "  reload          make svad read its configuration again (a bad file is\n"
        "                  refused with every error and the running one stays)\n"
        "  monitor         print svad's events as they happen (hotplug, contexts)\n"
        "                  until interrupted; --json: one JSON object a line\n\n"
        "Contexts (what a VM holds: an iommufd and its devices' fds):\n"
        "  alloc --vm NAME [--mode handoff|attached] [--fault-queue] [--owner-pid PID]\n"
        "        [--wait SECONDS] DEVICE...\n"
        "                  allocate a context and show the fds received and the info;\n"
        "                  DEVICE: a PCI address, a vDPA device or a work queue. A work\n"
        "                  queue comes as its node's path (the owner's uid may open it;\n"
        "                  the kernel binds a queue to the process that opens it).\n"
        "                  The lease follows its owner: svactl itself unless --owner-pid\n"
        "                  names a longer-lived process (root only), so svad releases\n"
        "                  the context (\"owner process exited\") as soon as svactl exits.\n"
        "                  To hand the fds to a program, use exec. --wait SECONDS: while\n"
        "                  a device is held by another context, keep asking that long\n"
        "                  (alloc and exec; on a terminal, progress is shown on stderr).\n"
        "  exec --vm NAME [--device DEVICE]... [--mode M] [--fault-queue] [--wait SECONDS]\n"
        "       -- COMMAND [ARG...]\n"
        "                  allocate a context, then run COMMAND in svactl's place with the\n"
        "                  fds inherited; the lease follows COMMAND (same process). In\n"
        "                  COMMAND and ARGs, {iommufd}, {fd:DEVICE} and {fault_queue}\n"
        "                  become fd numbers, {path:QUEUE} a work queue's node path\n"
        "                  (COMMAND opens it; {fd:QUEUE} is an error) and {context} the\n"
        "                  context's path (also in $SVAD_CONTEXT and $SVAD_IOMMUFD). Any\n"
        "                  other {word} is an error (${var} is left alone). Exit:\n"
        "                  COMMAND's, or 126/127 if it cannot run. Example:\n"
        "                    svactl exec --vm vm1 --device 0000:6a:01.0 -- \\\n"
        "                      qemu-system-x86_64 -object iommufd,id=i0,fd={iommufd} \\\n"
        "                      -device vfio-pci,iommufd=i0,fd={fd:0000:6a:01.0}\n"
        "  release CONTEXT release a context (CONTEXT: its path or its number N of\n"
        "                  /org/svad/Svad1/context/N)\n"
        "  contexts        the contexts svad holds\n"
        "  pasid alloc CONTEXT DEVICE\n"
        "                  allocate a PASID for a device of the context and print it\n"
        "  pasid release CONTEXT PASID\n\n"
        "VM reservations (devices held for a VM's life, not svactl's; no fds: the\n"
        "VMM, or libvirt for it, opens the device nodes; see the README's libvirt):\n"
        "  vm reserve NAME [--owner-pid PID] DEVICE...\n"
        "                  reserve devices for vm NAME through the policy, and print\n"
        "                  their nodes; held until released, or until the owner exits\n"
        "  vm owner NAME PID\n"
        "                  the VM's reservations follow process PID (its VMM) from now\n"
        "                  on: they end when it exits\n"
        "  vm release NAME release every reservation of the VM (0 if it holds none)\n"
        "  vm show NAME    the VM's reservations; exit 1 when it holds none\n"
        "  libvirt-hook [--run-dir DIR] NAME OPERATION SUB-OPERATION [EXTRA]\n"
        "                  libvirt's qemu hook (installed as qemu.d/50-svad), with the\n"
        "                  domain XML on stdin: reserves at prepare, hands over to QEMU's\n"
        "                  pid (DIR/NAME.pid, DIR /run/libvirt/qemu) at started and again\n"
        "                  at reconnect (taking a lost reservation again), releases at\n"
        "                  release\n\n"
        "Options:\n"
        "  --bus BUS       the bus svad serves on (default: system)\n"
        "  --json          machine-readable output\n"
        "  --version       print the version and exit\n\n"
        "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

// Global options may come anywhere before `--`; for exec, everything from the
// command on (after `--`, or its first non-option word) is kept verbatim.
Options parseArgs(int argc, char** argv) {
    Options o;
    bool verbatim = false;    // after `--` of a command other than exec
    bool execCommand = false; // inside exec's COMMAND
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (execCommand) {
            o.command.push_back(a);
            continue;
        }
        const bool isExec = !o.args.empty() && o.args[0] == "exec";
        if (a == "--" && !verbatim) {
            if (isExec) {
                execCommand = true;
            } else {
                verbatim = true;
            }
            continue;
        }
        if (verbatim) {
            o.args.push_back(a);
        } else if (a == "--help" || a == "-h") {
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
        } else if (isExec && a.rfind('-', 0) != 0) {
            // The first word that is neither an option nor an option's value.
            execCommand = true;
            o.command.push_back(a);
        } else {
            o.args.push_back(a);
            // A subcommand option's value is never a global option nor exec's COMMAND.
            if (o.args.size() > 1 && svad::cli::contextOptionTakesValue(a) && i + 1 < argc) {
                o.args.push_back(argv[++i]);
            }
        }
    }
    if (o.args.empty()) {
        fail(kExitUsage, "no command given (try --help)");
    }
    return o;
}

// The object an ID names, with its interfaces, read by its path alone.
std::optional<std::pair<std::string, Objects::mapped_type>>
findObject(svad::cli::ManagerProxy& manager, const std::string& rawId) {
    const std::string id = normalizeAddress(rawId);
    std::vector<std::string> candidates;
    if (id.rfind(std::string(svad::names::kRootPath) + "/", 0) == 0) {
        candidates.push_back(id);
    } else {
        candidates = {svad::core::devicePath(id), svad::core::vdpaPath(id),
                      svad::core::queuePath(id), svad::core::unitPath(id)};
        if (auto n = svad::core::parseDec(id); n && *n >= 0 && *n <= UINT32_MAX) {
            candidates.push_back(svad::core::groupPath(static_cast<uint32_t>(*n)));
        }
        // "context/3": what svactl shows as "context 3".
        if (id.rfind("context/", 0) == 0) {
            auto n = svad::core::parseDec(std::string_view(id).substr(8));
            if (n && *n >= 0) {
                candidates.push_back(std::string(svad::names::kRootPath) + "/" + id);
            }
        }
    }
    for (const auto& c : candidates) {
        // The first object at or after the path is the object itself, if it exists.
        auto found = svad::cli::listObjects(manager, c, false, 1);
        if (!found.empty() && found.begin()->first == c) {
            return std::make_pair(c, std::move(found.begin()->second));
        }
    }
    return std::nullopt;
}

int run(const Options& o) {
    const std::string& cmd = o.args[0];
    if (svad::cli::isContextCommand(cmd)) {
        return svad::cli::runContextCommand(o);
    }
    if (cmd == "monitor") {
        return svad::cli::runMonitor(o);
    }
    if (cmd == "vm") {
        return svad::cli::runVmCommand(o);
    }
    if (cmd == "libvirt-hook") {
        return svad::cli::runLibvirtHook(o);
    }
    if (!o.command.empty()) {
        fail(kExitUsage, "unexpected '--' for " + cmd);
    }
    static const std::vector<std::string> kListings = {"devices", "vdpa", "groups", "units",
                                                       "queues"};
    const bool listing = std::find(kListings.begin(), kListings.end(), cmd) != kListings.end();
    if (!listing && cmd != "status" && cmd != "show" && cmd != "rescan" && cmd != "plugins" &&
        cmd != "reload") {
        fail(kExitUsage, "unknown command '" + cmd + "' (try --help)");
    }
    if (cmd == "show" && o.args.size() != 2) {
        fail(kExitUsage, "show needs exactly one ID (a PCI address, vDPA device, queue, unit, "
                         "group or object path)");
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
        {
            svad::cli::Progress progress("rescanning the host",
                                         svad::cli::Progress::terminal() && !o.json);
            manager.Rescan();
        }
        if (!o.json) {
            std::printf("rescanned: %u devices, %u groups, %u units, %u queues\n",
                        manager.DeviceCount(), manager.GroupCount(), manager.UnitCount(),
                        manager.QueueCount());
        } else {
            std::printf("{\"rescanned\":true}\n");
        }
        return 0;
    }
    if (cmd == "reload") {
        {
            svad::cli::Progress progress("reloading the configuration",
                                         svad::cli::Progress::terminal() && !o.json);
            manager.Reload();
        }
        std::printf(o.json ? "{\"reloaded\":true,\"config\":%s}\n" : "reloaded %s\n",
                    o.json ? svad::cli::jsonString(manager.ConfigFile()).c_str()
                           : (manager.ConfigFile().empty() ? std::string("(built-in defaults)")
                                                           : manager.ConfigFile())
                                 .c_str());
        return 0;
    }
    if (cmd == "plugins") {
        (void)std::fputs(
            svad::cli::renderPlugins(manager.Plugins(), manager.PluginRefusals(), o.json).c_str(),
            stdout);
        return 0;
    }
    if (cmd == "status") {
        auto props = manager.GetAll(std::string(svad::names::kManagerInterface));
        (void)std::fputs(svad::cli::renderProperties(props, o.json, {},
                                                     std::string(svad::names::kManagerInterface))
                             .c_str(),
                         stdout);
        return 0;
    }

    if (cmd == "show") {
        auto found = findObject(manager, o.args[1]);
        if (!found) {
            fail(kExitFailure,
                 "no device, vDPA device, queue, unit, group or object named '" + o.args[1] + "'");
        }
        const auto& [path, ifaces] = *found;
        for (const auto& [iface, props] : ifaces) {
            if (iface.rfind("org.svad.Svad1.", 0) == 0) {
                (void)std::fputs(svad::cli::renderProperties(props, o.json, path, iface).c_str(),
                                 stdout);
            }
        }
        return 0;
    }
    const Objects objects = svad::cli::listObjects(
        manager, svad::cli::listingPrefix(cmd), svad::cli::Progress::terminal() && !o.json,
        SIZE_MAX, o.json ? nullptr : &svad::cli::listingColumns(cmd));
    (void)std::fputs(svad::cli::renderListing(cmd, objects, o.json, pasidOnly).c_str(), stdout);
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
            fail(kExitFailure, "svad is not running (nobody owns " +
                                   std::string(svad::names::kService) + " on " +
                                   svad::cli::busLabel(o.bus) + ")");
        }
        fail(kExitFailure, name + ": " + e.getMessage());
    }
}
