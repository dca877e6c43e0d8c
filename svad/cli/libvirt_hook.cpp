// svactl libvirt-hook: libvirt's qemu hook for svad (packaging/libvirt/svad-hook,
// installed as /etc/libvirt/hooks/qemu.d/50-svad). libvirtd runs it as
//   NAME OPERATION SUB-OPERATION EXTRA
// with the domain XML on stdin, synchronously and without a timeout; a
// non-zero exit vetoes prepare, start and started (stderr is the error the user
// sees) and kills the domain at reconnect. It never calls libvirt back.
//
// What a domain asks of svad: every <hostdev mode='subsystem' type='pci'>
// address, and the devices named in svad's metadata element:
//   <metadata><svad:vm xmlns:svad="urn:svad:libvirt:1">
//     <svad:device name="vdpa0"/> ...
//   </svad:vm></metadata>
// A domain that asks nothing costs a parse and exit 0: no bus connection.
//
//   prepare begin   reserve the devices for the VM (ReserveDevices)
//   started begin   hand the reservation to QEMU's pid (SetVmOwner)
//   reconnect begin hand it to QEMU's pid again (libvirtd restarted); a lost one is
//                   taken again, and only devices svad refuses stop the domain
//   release end     release it (ReleaseVm); auto-bound functions go back
//   migrate, restore: the XML passes through unchanged
#include "svad/cli/client.h"
#include "svad/core/parse.h"
#include "svad/dbus/connect.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <map>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

namespace svad::cli {

namespace {

constexpr const char* kNamespace = "urn:svad:libvirt:1";
constexpr const char* kDefaultRunDir = "/run/libvirt/qemu";
// A domain XML is a few KiB; libvirt itself caps documents far below this.
constexpr size_t kMaxXml = 16U << 20U;

std::string readAll(int fd, size_t max) {
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max) {
            fail(kExitFailure, "libvirt hook: the domain XML on stdin is larger than " +
                                   std::to_string(max) + " bytes");
        }
    }
    return out;
}

bool writeAll(int fd, const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += static_cast<size_t>(n);
    }
    return true;
}

std::string attr(xmlNode* node, const char* name) {
    xmlChar* v = xmlGetProp(node, reinterpret_cast<const xmlChar*>(name));
    if (v == nullptr) {
        return {};
    }
    std::string out(reinterpret_cast<const char*>(v));
    xmlFree(v);
    return out;
}

bool named(xmlNode* node, const char* name) {
    return node != nullptr && node->type == XML_ELEMENT_NODE &&
           std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0;
}

bool inSvadNamespace(xmlNode* node) {
    return node->ns != nullptr && node->ns->href != nullptr &&
           std::strcmp(reinterpret_cast<const char*>(node->ns->href), kNamespace) == 0;
}

xmlNode* child(xmlNode* node, const char* name) {
    for (xmlNode* c = node != nullptr ? node->children : nullptr; c != nullptr; c = c->next) {
        if (named(c, name) && c->ns == nullptr) {
            return c;
        }
    }
    return nullptr;
}

// "0x3b" as libvirt writes PCI address parts; nullopt if not a number in range.
std::optional<unsigned> hexPart(const std::string& text, unsigned max) {
    std::string digits = text;
    if (digits.rfind("0x", 0) == 0 || digits.rfind("0X", 0) == 0) {
        digits = digits.substr(2);
    }
    if (digits.empty() || digits.size() > 8 ||
        digits.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
        return std::nullopt;
    }
    const unsigned long v = std::stoul(digits, nullptr, 16);
    if (v > max) {
        return std::nullopt;
    }
    return static_cast<unsigned>(v);
}

struct Wanted {
    std::string name; // the domain's <name>
    std::vector<std::string> devices;
};

// What the domain asks of svad; a bad XML or address fails with one line.
Wanted wantedBy(const std::string& xml) {
    xmlDoc* doc = xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == nullptr) {
        fail(kExitFailure, "libvirt hook: the domain XML on stdin cannot be parsed");
    }
    struct Free {
        xmlDoc* d;
        ~Free() { xmlFreeDoc(d); }
    } freeDoc{doc};
    xmlNode* domain = xmlDocGetRootElement(doc);
    if (!named(domain, "domain")) {
        fail(kExitFailure, "libvirt hook: stdin holds no <domain> XML");
    }
    Wanted w;
    if (xmlNode* n = child(domain, "name")) {
        xmlChar* text = xmlNodeGetContent(n);
        if (text != nullptr) {
            w.name = reinterpret_cast<const char*>(text);
            xmlFree(text);
        }
    }
    auto add = [&w](const std::string& id) {
        for (const auto& d : w.devices) {
            if (d == id) {
                return;
            }
        }
        w.devices.push_back(id);
    };
    if (xmlNode* devices = child(domain, "devices")) {
        for (xmlNode* h = devices->children; h != nullptr; h = h->next) {
            if (!named(h, "hostdev") || attr(h, "mode") != "subsystem" ||
                attr(h, "type") != "pci") {
                continue;
            }
            xmlNode* address = child(child(h, "source"), "address");
            if (address == nullptr) {
                fail(kExitFailure, "libvirt hook: a PCI <hostdev> of domain '" + w.name +
                                       "' has no <source><address>");
            }
            const auto domainPart = hexPart(attr(address, "domain"), 0xffff);
            const auto bus = hexPart(attr(address, "bus"), 0xff);
            const auto slot = hexPart(attr(address, "slot"), 0x1f);
            const auto function = hexPart(attr(address, "function"), 0x7);
            if (!domainPart || !bus || !slot || !function) {
                fail(kExitFailure, "libvirt hook: a PCI <hostdev> of domain '" + w.name +
                                       "' has an address svad cannot read (domain, bus, slot "
                                       "and function in hex)");
            }
            char id[16];
            (void)std::snprintf(id, sizeof id, "%04x:%02x:%02x.%x", *domainPart, *bus, *slot,
                                *function);
            add(id);
        }
    }
    if (xmlNode* metadata = child(domain, "metadata")) {
        for (xmlNode* vm = metadata->children; vm != nullptr; vm = vm->next) {
            if (!named(vm, "vm") || !inSvadNamespace(vm)) {
                continue;
            }
            for (xmlNode* d = vm->children; d != nullptr; d = d->next) {
                if (d->type != XML_ELEMENT_NODE) {
                    continue;
                }
                if (!named(d, "device") || !inSvadNamespace(d)) {
                    fail(kExitFailure, "libvirt hook: domain '" + w.name + "': <" +
                                           reinterpret_cast<const char*>(d->name) +
                                           "> in svad's metadata is not known (only <device "
                                           "name='...'/>)");
                }
                const std::string name = attr(d, "name");
                if (name.empty()) {
                    fail(kExitFailure, "libvirt hook: domain '" + w.name +
                                           "': a <device> in svad's metadata has no name");
                }
                add(normalizeAddress(name));
            }
        }
    }
    return w;
}

// QEMU's pid as libvirt wrote it.
pid_t qemuPid(const std::string& runDir, const std::string& vm) {
    const std::string path = runDir + "/" + vm + ".pid";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(kExitFailure, "libvirt hook: cannot read QEMU's pid for domain '" + vm + "' from " +
                               path + ": " + std::strerror(errno));
    }
    std::string text = readAll(fd, 64);
    ::close(fd);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    auto pid = core::parseDec(text);
    if (!pid || *pid <= 0 || *pid > INT32_MAX) {
        fail(kExitFailure, "libvirt hook: " + path + " holds no pid");
    }
    return static_cast<pid_t>(*pid);
}

bool svadAbsent(const sdbus::Error& e) {
    const std::string& n = e.getName();
    return n == "org.freedesktop.DBus.Error.ServiceUnknown" ||
           n == "org.freedesktop.DBus.Error.NameHasNoOwner" ||
           n == "org.freedesktop.DBus.Error.FileNotFound" ||
           n == "org.freedesktop.DBus.Error.NoServer" ||
           n == "org.freedesktop.DBus.Error.Disconnected" || n.rfind("System.Error.", 0) == 0;
}

// One line for libvirt to show: "svad: WHAT: MESSAGE".
[[noreturn]] void refuse(const std::string& what, const sdbus::Error& e) {
    if (svadAbsent(e)) {
        fail(kExitFailure, "svad is not running (" + e.getMessage() + "): " + what);
    }
    fail(kExitFailure, what + ": " + e.getMessage() + " (" + e.getName() + ")");
}

std::unique_ptr<sdbus::IConnection> connect(const Options& o, const std::string& what) {
    try {
        return dbus::connectBus(o.bus);
    } catch (const sdbus::Error& e) {
        // No bus at all: svad cannot be running either.
        fail(kExitFailure, "svad is not running (cannot connect to " + busLabel(o.bus) + ": " +
                               e.getMessage() + "): " + what);
    }
}

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) {
        out += (out.empty() ? "" : " ") + i;
    }
    return out;
}

// libvirtd restarted and found the domain running. A failure here makes
// libvirt kill it, so only a breach of isolation does: svad not running (it
// cannot be asked) is a warning; a reservation svad no longer holds (it found
// QEMU gone at a restart, say) is taken again; only devices svad now refuses
// to the domain (another VM has them) stop it.
int reconnect(const Options& o, const std::string& runDir, const std::string& name,
              const std::vector<std::string>& devices) {
    const pid_t pid = qemuPid(runDir, name);
    std::unique_ptr<sdbus::IConnection> conn;
    try {
        conn = dbus::connectBus(o.bus);
    } catch (const sdbus::Error& e) {
        (void)std::fprintf(stderr,
                           "svactl: warning: svad is not running (%s): domain '%s' keeps running "
                           "without svad's reservation check\n",
                           e.getMessage().c_str(), name.c_str());
        return 0;
    }
    ManagerProxy manager(*conn);
    try {
        (void)manager.SetVmOwner(name, static_cast<uint32_t>(pid));
        return 0;
    } catch (const sdbus::Error& e) {
        if (svadAbsent(e)) {
            (void)std::fprintf(stderr,
                               "svactl: warning: svad is not running (%s): domain '%s' keeps "
                               "running without svad's reservation check\n",
                               e.getMessage().c_str(), name.c_str());
            return 0;
        }
        if (e.getName() != names::errorInfo(names::Error::NotFound).dbusName) {
            refuse("domain '" + name + "': svad refuses its reservation", e);
        }
    }
    const std::string what = "domain '" + name + "' lost its svad reservation and cannot take " +
                             joined(devices) + " again";
    try {
        (void)manager.ReserveDevices(name, devices, {});
        (void)manager.SetVmOwner(name, static_cast<uint32_t>(pid));
    } catch (const sdbus::Error& e) {
        refuse(what, e);
    }
    (void)std::fprintf(stderr, "svactl: domain '%s' had lost its svad reservation: taken again\n",
                       name.c_str());
    return 0;
}

} // namespace

int runLibvirtHook(const Options& o) {
    // libvirt-hook [--run-dir DIR] NAME OPERATION SUB-OPERATION [EXTRA]
    std::string runDir = kDefaultRunDir;
    std::vector<std::string> args;
    for (size_t i = 1; i < o.args.size(); ++i) {
        if (o.args[i] == "--run-dir" && i + 1 < o.args.size()) {
            runDir = o.args[++i];
        } else {
            args.push_back(o.args[i]);
        }
    }
    if (args.size() < 3) {
        fail(kExitUsage, "libvirt-hook needs NAME OPERATION SUB-OPERATION [EXTRA] (as libvirt "
                         "calls a qemu hook), with the domain XML on stdin");
    }
    const std::string& name = args[0];
    const std::string& op = args[1];
    const std::string& sub = args[2];
    const std::string xml = readAll(STDIN_FILENO, kMaxXml);

    if ((op == "migrate" || op == "restore") && sub == "begin") {
        // libvirt reads the (possibly changed) XML back: it passes unchanged.
        return writeAll(STDOUT_FILENO, xml) ? 0 : 1;
    }
    const bool handled = (op == "prepare" && sub == "begin") ||
                         (op == "started" && sub == "begin") ||
                         (op == "reconnect" && sub == "begin") || (op == "release" && sub == "end");
    if (!handled) {
        return 0;
    }
    const Wanted w = wantedBy(xml);
    if (w.devices.empty()) {
        return 0; // nothing of svad's: no bus connection at all
    }
    if (!w.name.empty() && w.name != name) {
        fail(kExitFailure,
             "libvirt hook: called for domain '" + name + "' with the XML of '" + w.name + "'");
    }

    if (op == "prepare") {
        const std::string what =
            "cannot reserve " + joined(w.devices) + " for domain '" + name + "'";
        auto conn = connect(o, what);
        ManagerProxy manager(*conn);
        try {
            // A reservation left by an earlier run of this domain (libvirtd died before
            // its release hook) goes first: libvirt starts no domain twice.
            (void)manager.ReleaseVm(name);
            (void)manager.ReserveDevices(name, w.devices, {});
        } catch (const sdbus::Error& e) {
            refuse(what, e);
        }
        return 0;
    }
    if (op == "reconnect") {
        return reconnect(o, runDir, name, w.devices);
    }
    if (op == "started") {
        const pid_t pid = qemuPid(runDir, name);
        const std::string what =
            "cannot hand domain '" + name + "' to QEMU (pid " + std::to_string(pid) + ")";
        auto conn = connect(o, what);
        ManagerProxy manager(*conn);
        try {
            (void)manager.SetVmOwner(name, static_cast<uint32_t>(pid));
        } catch (const sdbus::Error& e) {
            refuse(what, e);
        }
        return 0;
    }
    // release end: libvirt ignores the exit status; say what went wrong all the same.
    try {
        auto conn = dbus::connectBus(o.bus);
        ManagerProxy manager(*conn);
        (void)manager.ReleaseVm(name);
    } catch (const sdbus::Error& e) {
        (void)std::fprintf(stderr,
                           "svactl: cannot release the svad reservation of domain '%s': %s\n",
                           name.c_str(), e.getMessage().c_str());
        return 1;
    }
    return 0;
}

} // namespace svad::cli
