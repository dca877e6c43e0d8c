// libvirt's qemu hook (svactl libvirt-hook, behind packaging/libvirt/svad-hook)
// fed domain XML the way libvirtd feeds it, against the real svad on a private
// bus: what a domain names is reserved at prepare, handed to QEMU's pid at
// started, checked at reconnect and released at release; a refusal is one line
// on stderr and a non-zero exit. The real libvirtd drives it in the libvirt tier.
#include "fixture.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iostream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContext = "org.svad.Svad1.Context";

std::string domainXml(const std::string& name, const std::string& devices,
                      const std::string& metadata) {
    return "<domain type='qemu'>\n  <name>" + name + "</name>\n  <memory unit='MiB'>64</memory>\n" +
           metadata + "  <devices>\n" + devices + "  </devices>\n</domain>\n";
}

std::string hostdev(const std::string& bus, const std::string& slot, const std::string& fn) {
    return "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n"
           "        <address domain='0x0000' bus='" +
           bus + "' slot='" + slot + "' function='" + fn + "'/>\n      </source>\n    </hostdev>\n";
}

std::string svadMetadata(const std::vector<std::string>& devices) {
    std::string out = "  <metadata>\n    <svad:vm xmlns:svad='urn:svad:libvirt:1'>\n";
    for (const auto& d : devices) {
        out += "      <svad:device name='" + d + "'/>\n";
    }
    return out + "    </svad:vm>\n  </metadata>\n";
}

class Hook {
public:
    explicit Hook(SvadFixture& f) : f_(f), runDir_(f.root() + "/run-libvirt-qemu") {
        std::filesystem::create_directories(runDir_);
    }
    const std::string& runDir() const { return runDir_; }
    // The hook as libvirtd runs it: NAME OPERATION SUB-OPERATION -, the XML on stdin.
    RunResult call(const std::string& name, const std::string& op, const std::string& sub,
                   const std::string& xml, const std::string& bus = {}) {
        const std::string in = f_.root() + "/hook-stdin.xml";
        std::ofstream(in, std::ios::trunc) << xml;
        const auto start = std::chrono::steady_clock::now();
        // (The scratch folder's name is mkdtemp's: no quote in it.)
        RunResult r = runCommand({"sh", "-c", "exec \"$0\" \"$@\" <'" + in + "'", SVACTL_BINARY,
                                  "--bus", bus.empty() ? f_.bus() : bus, "libvirt-hook",
                                  "--run-dir", runDir_, name, op, sub, "-"});
        last_ = std::chrono::steady_clock::now() - start;
        return r;
    }
    std::chrono::steady_clock::duration last() const { return last_; }

private:
    SvadFixture& f_;
    std::string runDir_;
    std::chrono::steady_clock::duration last_{};
};

uint32_t contextCount(SvadFixture& f) {
    return f.property(kRoot, kManager, "ContextCount").get<uint32_t>();
}

std::vector<sdbus::ObjectPath> contextsOf(SvadFixture& f) {
    std::vector<sdbus::ObjectPath> out;
    for (uint32_t id = 1; id < 32; ++id) {
        const sdbus::ObjectPath p("/org/svad/Svad1/context/" + std::to_string(id));
        try {
            (void)f.property(p, kContext, "Vm");
            out.push_back(p);
        } catch (const sdbus::Error&) {
        }
    }
    return out;
}

TEST(LibvirtHook, ADomainsDevicesAreReservedHandedToQemuAndReleased) {
    SvadFixture f(testHost());
    Hook hook(f);
    const std::string xml = domainXml("guest1", hostdev("0x3b", "0x10", "0x0"),
                                      svadMetadata({"vdpa0", "wq0.0", "3b:10.1"}));
    auto r = hook.call("guest1", "prepare", "begin", xml);
    ASSERT_EQ(r.exitCode, 0) << r.errors << f.svad().log();
    auto held = contextsOf(f);
    ASSERT_EQ(held.size(), 1U);
    EXPECT_EQ(f.property(held[0], kContext, "Devices").get<std::vector<std::string>>(),
              (std::vector<std::string>{"0000:3b:10.0", "vdpa0", "wq0.0", "0000:3b:10.1"}));
    EXPECT_EQ(f.property(held[0], kContext, "Mode").get<uint32_t>(), 3U);
    EXPECT_EQ(f.property(held[0], kContext, "OwnerPid").get<uint32_t>(), 0U);

    // QEMU runs: its pid file names the owner.
    pid_t qemu = ::fork();
    if (qemu == 0) {
        ::pause();
        ::_exit(0);
    }
    std::ofstream(hook.runDir() + "/guest1.pid") << qemu << "\n";
    r = hook.call("guest1", "started", "begin", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(f.property(held[0], kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(qemu));
    // libvirtd restarted: the reservation is still there.
    r = hook.call("guest1", "reconnect", "begin", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    // Stopped, then released: the devices are free.
    r = hook.call("guest1", "stopped", "end", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(contextCount(f), 1U);
    r = hook.call("guest1", "release", "end", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_EQ(contextCount(f), 0U);
    // libvirtd restarted and the reservation is gone (svad found QEMU dead at a
    // restart, say): reconnect takes the devices again for the running domain.
    r = hook.call("guest1", "reconnect", "begin", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.errors.find("taken again"), std::string::npos) << r.errors;
    held = contextsOf(f);
    ASSERT_EQ(held.size(), 1U);
    EXPECT_EQ(f.property(held[0], kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(qemu));
    r = hook.call("guest1", "release", "end", xml);
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    // Another VM holds a device meanwhile: that is a breach, and the domain must stop.
    auto other = allocateContext(*f.proxy(kRoot), "other", {"vdpa0"});
    r = hook.call("guest1", "reconnect", "begin", xml);
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("lost its svad reservation and cannot take"), std::string::npos)
        << r.errors;
    EXPECT_NE(r.errors.find("Busy"), std::string::npos) << r.errors;
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(other.path);
    // svad not running: libvirt is told nothing that would kill the domain.
    r = hook.call("guest1", "reconnect", "begin", xml, "unix:path=" + f.root() + "/no-such-bus");
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.errors.find("svad is not running"), std::string::npos) << r.errors;
    EXPECT_EQ(contextCount(f), 0U);
    ::kill(qemu, SIGKILL);
    ::waitpid(qemu, nullptr, 0);
}

TEST(LibvirtHook, RefusalsAreOneLineAndAVeto) {
    SvadFixture f(testHost());
    Hook hook(f);
    // Another VM holds the VF: svad's reason reaches the user.
    auto a = allocateContext(*f.proxy(kRoot), "other", {"0000:3b:10.0"});
    const std::string xml = domainXml("guest2", hostdev("0x3b", "0x10", "0x0"), "");
    auto r = hook.call("guest2", "prepare", "begin", xml);
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("cannot reserve 0000:3b:10.0 for domain 'guest2'"), std::string::npos)
        << r.errors;
    EXPECT_NE(r.errors.find("org.svad.Svad1.Error.Busy"), std::string::npos) << r.errors;
    EXPECT_EQ(std::count(r.errors.begin(), r.errors.end(), '\n'), 1) << r.errors;
    // An unknown device in the metadata, an element svad does not know, bad XML.
    r = hook.call("guest2", "prepare", "begin",
                  domainXml("guest2", "", svadMetadata({"vdpa-none"})));
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("NotFound"), std::string::npos) << r.errors;
    r = hook.call("guest2", "prepare", "begin",
                  domainXml("guest2", "",
                            "<metadata><svad:vm xmlns:svad='urn:svad:libvirt:1'><svad:colour/>"
                            "</svad:vm></metadata>"));
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("colour"), std::string::npos) << r.errors;
    r = hook.call("guest2", "prepare", "begin", "<domain><name>guest2</name>");
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("cannot be parsed"), std::string::npos) << r.errors;
    r = hook.call("guest2", "prepare", "begin",
                  domainXml("guest2", hostdev("0x3b", "0x1ff", "0x0"), ""));
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("address"), std::string::npos) << r.errors;
    // Nothing was taken by any of them.
    EXPECT_EQ(contextCount(f), 1U);
    // svad is not there: a domain that names its devices cannot start.
    r = hook.call("guest2", "prepare", "begin", domainXml("guest2", "", svadMetadata({"vdpa0"})),
                  "unix:path=" + f.root() + "/no-such-bus");
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("svad is not running"), std::string::npos) << r.errors;
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
}

TEST(LibvirtHook, ADomainThatNamesNothingOfSvadsIsNotItsBusiness) {
    SvadFixture f(testHost());
    Hook hook(f);
    const std::string plain =
        domainXml("plain", "    <disk type='file' device='disk'/>\n",
                  "  <metadata><other:x xmlns:other='urn:example:other'/></metadata>\n");
    // Not even a bus: no connection is made for it.
    for (const char* op : {"prepare", "started", "reconnect"}) {
        auto r = hook.call("plain", op, "begin", plain, "unix:path=" + f.root() + "/no-such-bus");
        EXPECT_EQ(r.exitCode, 0) << op << ": " << r.errors;
        EXPECT_TRUE(r.errors.empty()) << r.errors;
    }
    auto r = hook.call("plain", "release", "end", plain, "unix:path=" + f.root() + "/no-such-bus");
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    // migrate and restore pass the XML through unchanged, svad's or not.
    const std::string xml = domainXml("guest3", "", svadMetadata({"vdpa0"}));
    for (const char* op : {"migrate", "restore"}) {
        r = hook.call("guest3", op, "begin", xml);
        EXPECT_EQ(r.exitCode, 0) << r.errors;
        EXPECT_EQ(r.output, xml) << op;
    }
    EXPECT_EQ(contextCount(f), 0U);
}

// libvirt calls hooks synchronously: each call must be quick. Printed, not asserted.
TEST(LibvirtHook, EachCallTakesMilliseconds) {
    SvadFixture f(testHost());
    Hook hook(f);
    const std::string xml = domainXml("timed", "", svadMetadata({"vdpa0", "wq0.1"}));
    pid_t qemu = ::fork();
    if (qemu == 0) {
        ::pause();
        ::_exit(0);
    }
    std::ofstream(hook.runDir() + "/timed.pid") << qemu << "\n";
    auto ms = [&hook] { return std::chrono::duration<double, std::milli>(hook.last()).count(); };
    std::string line;
    for (const auto& [op, sub] :
         std::vector<std::pair<std::string, std::string>>{{"prepare", "begin"},
                                                          {"started", "begin"},
                                                          {"reconnect", "begin"},
                                                          {"release", "end"}}) {
        auto r = hook.call("timed", op, sub, xml);
        EXPECT_EQ(r.exitCode, 0) << op << ": " << r.errors;
        line += " " + op + " " + std::to_string(ms()).substr(0, 5) + " ms;";
    }
    (void)hook.call("plain", "prepare", "begin", domainXml("plain", "", ""));
    line += " a domain without svad devices " + std::to_string(ms()).substr(0, 5) + " ms";
    std::cout << "[ measured ] hook calls (svactl, a new bus connection each):" << line
              << std::endl;
    ::kill(qemu, SIGKILL);
    ::waitpid(qemu, nullptr, 0);
}

} // namespace
} // namespace svad::test
