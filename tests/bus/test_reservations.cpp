// VM-lifetime reservations (ReserveDevices, SetVmOwner, ReleaseVm): devices
// held for a VM through the same policy as AllocateContext, with no fd handed
// out, following the VM's name until an owner process is named, and then
// that process. What libvirt's hook uses.
#include "acl_entries.h"
#include "fixture.h"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContext = "org.svad.Svad1.Context";
constexpr const char* kGpu = "0000:17:00.0";   // on vfio-pci; its group also holds the audio
constexpr const char* kAudio = "0000:17:00.1"; // on snd_hda_intel
constexpr uint32_t kModeReserved = 3;

using Info = std::map<std::string, sdbus::Variant>;
using Names = std::map<std::string, std::string>;
using Numbers = std::map<std::string, uint32_t>;

struct Reserved {
    sdbus::ObjectPath path;
    Info info;
};

Reserved reserve(sdbus::IConnection& conn, const std::string& vm,
                 const std::vector<std::string>& devices, const Info& options = {}) {
    auto p = svad::dbus::compat::makeProxy(conn, "org.svad.Svad1", kRoot);
    Reserved r;
    p->callMethod("ReserveDevices")
        .onInterface(kManager)
        .withArguments(vm, devices, options)
        .storeResultsTo(r.path, r.info);
    return r;
}

Reserved reserve(SvadFixture& f, const std::string& vm, const std::vector<std::string>& devices,
                 const Info& options = {}) {
    return reserve(f.client(), vm, devices, options);
}

std::vector<sdbus::ObjectPath> setOwner(SvadFixture& f, const std::string& vm, pid_t pid) {
    std::vector<sdbus::ObjectPath> out;
    f.proxy(kRoot)
        ->callMethod("SetVmOwner")
        .onInterface(kManager)
        .withArguments(vm, static_cast<uint32_t>(pid))
        .storeResultsTo(out);
    return out;
}

uint32_t releaseVm(SvadFixture& f, const std::string& vm) {
    uint32_t n = 0;
    f.proxy(kRoot)
        ->callMethod("ReleaseVm")
        .onInterface(kManager)
        .withArguments(vm)
        .storeResultsTo(n);
    return n;
}

// The bus error's name and message of a call, or "" when it succeeded.
std::string errorOf(const std::function<void()>& call) {
    try {
        call();
    } catch (const sdbus::Error& e) {
        return e.getName() + ": " + e.getMessage();
    }
    return "";
}

uint32_t contextCount(SvadFixture& f) {
    return f.property(kRoot, kManager, "ContextCount").get<uint32_t>();
}

// A child that waits to be killed: a VMM standing in.
class Child {
public:
    Child() {
        pid_ = ::fork();
        if (pid_ == 0) {
            ::pause();
            ::_exit(0);
        }
    }
    ~Child() { kill(); }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    pid_t pid() const { return pid_; }
    void kill() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

private:
    pid_t pid_ = -1;
};

std::string readLink(const std::string& path) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(path, ec);
    return ec ? std::string() : target.filename().string();
}

std::string driverOf(const SvadFixture& f, const std::string& address) {
    return readLink(f.sysfs() + "/bus/pci/devices/" + address + "/driver");
}

// The NIC's two VFs, on vfio-pci with their cdevs (vfio1, vfio2).
std::vector<std::string> vfs(SvadFixture& f) {
    auto paths = f.property("/org/svad/Svad1/device/0000_3b_00_0", "org.svad.Svad1.Device",
                            "VirtualFunctions")
                     .get<std::vector<sdbus::ObjectPath>>();
    std::vector<std::string> out;
    for (const auto& p : paths) {
        out.push_back(f.property(p, "org.svad.Svad1.Device", "Address").get<std::string>());
    }
    return out;
}

TEST(Reservations, HoldTheDevicesForTheVmWithoutFdsUntilReleasedByName) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ASSERT_EQ(vf.size(), 2U);
    // Reserved from a connection that then goes away: the reservation stays.
    Reserved r;
    {
        auto conn = sdbus::createSessionBusConnectionWithAddress(f.bus());
        r = reserve(*conn, "vm-r", {vf[0], "vdpa0", "wq0.0"});
    }
    EXPECT_EQ(r.info.at("mode").get<std::string>(), "reserved");
    const auto nodes = r.info.at("nodes").get<Names>();
    EXPECT_EQ(nodes.at(vf[0]), f.devRoot() + "/vfio/devices/vfio1");
    EXPECT_EQ(nodes.at("vdpa0").rfind(f.devRoot() + "/vhost-vdpa-", 0), 0U) << nodes.at("vdpa0");
    EXPECT_EQ(nodes.at("wq0.0"), f.devRoot() + "/dsa/wq0.0");
    EXPECT_EQ(r.info.at("iommu_groups").get<Numbers>().count(vf[0]), 1U);
    EXPECT_EQ(r.info.at("plugins").get<Names>().at(vf[0]), "vfio");

    EXPECT_EQ(f.property(r.path, kContext, "Mode").get<uint32_t>(), kModeReserved);
    EXPECT_EQ(f.property(r.path, kContext, "OwnerPid").get<uint32_t>(), 0U);
    EXPECT_EQ(f.property(r.path, kContext, "Vm").get<std::string>(), "vm-r");
    // No fd in svad either: its process holds nothing of the devices.
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(f.svad().pid()) + "/fd")) {
        const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
        EXPECT_EQ(target.find(f.devRoot()), std::string::npos) << target;
    }
    // The devices are the VM's: another VM is refused, as for a context.
    const std::string busy =
        errorOf([&] { (void)allocateContext(*f.proxy(kRoot), "vm-x", {vf[0]}); });
    EXPECT_NE(busy.find("org.svad.Svad1.Error.Busy"), std::string::npos) << busy;
    EXPECT_NE(busy.find("vm-r"), std::string::npos) << busy;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(contextCount(f), 1U);

    EXPECT_EQ(releaseVm(f, "vm-r"), 1U);
    EXPECT_EQ(contextCount(f), 0U);
    EXPECT_NE(f.svad().log().find("released with its VM"), std::string::npos);
    // Free again; a second release finds nothing and is no error.
    auto a = allocateContext(*f.proxy(kRoot), "vm-x", {vf[0], "vdpa0"});
    EXPECT_EQ(releaseVm(f, "vm-r"), 0U);
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
}

TEST(Reservations, FollowTheOwnerOnceOneIsNamed) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ASSERT_EQ(vf.size(), 2U);
    const Reserved one = reserve(f, "vm-o", {vf[0]});
    const Reserved two = reserve(f, "vm-o", {"vdpa0"});
    const Reserved other = reserve(f, "vm-p", {vf[1]});
    Child vmm;
    const auto paths = setOwner(f, "vm-o", vmm.pid());
    EXPECT_EQ(paths, (std::vector<sdbus::ObjectPath>{one.path, two.path}));
    EXPECT_EQ(f.property(one.path, kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(vmm.pid()));
    EXPECT_EQ(f.property(one.path, kContext, "OwnerUid").get<uint32_t>(), ::geteuid());

    // The owner exits: both of its VM's go, the other VM's stays.
    vmm.kill();
    EXPECT_TRUE(waitUntil([&f] { return contextCount(f) == 1; })) << f.svad().log();
    EXPECT_EQ(f.property(other.path, kContext, "Vm").get<std::string>(), "vm-p");
    EXPECT_NE(f.svad().log().find("owner process exited"), std::string::npos);

    // Named errors: a VM with nothing reserved, a process that is not there.
    const std::string none = errorOf([&] { (void)setOwner(f, "vm-none", ::getpid()); });
    EXPECT_NE(none.find("org.svad.Svad1.Error.NotFound"), std::string::npos) << none;
    EXPECT_NE(none.find("vm-none"), std::string::npos) << none;
    Child gone;
    const pid_t dead = gone.pid();
    gone.kill();
    const std::string noProcess = errorOf([&] { (void)setOwner(f, "vm-p", dead); });
    EXPECT_NE(noProcess.find("org.svad.Svad1.Error.InvalidArgument"), std::string::npos)
        << noProcess;
    EXPECT_NE(noProcess.find(std::to_string(dead)), std::string::npos) << noProcess;
    // owner_pid at once, and a process gone before its lease began: released at once.
    const std::string deadOption = errorOf([&] {
        (void)reserve(f, "vm-q", {"wq0.1"}, {{"owner_pid", sdbus::Variant(uint32_t(dead))}});
    });
    EXPECT_NE(deadOption.find("org.svad.Svad1.Error.InvalidArgument"), std::string::npos)
        << deadOption;
    Child vmm2;
    const Reserved withOwner =
        reserve(f, "vm-q", {"wq0.1"}, {{"owner_pid", sdbus::Variant(uint32_t(vmm2.pid()))}});
    EXPECT_EQ(f.property(withOwner.path, kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(vmm2.pid()));
    vmm2.kill();
    EXPECT_TRUE(waitUntil([&f] { return contextCount(f) == 1; })) << f.svad().log();
}

TEST(Reservations, BadRequestsAreNamedErrorsAndTakeNothing) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto expectError = [&f](const std::string& error, const std::string& needle,
                            const std::function<void()>& call) {
        const std::string e = errorOf(call);
        EXPECT_NE(e.find(error), std::string::npos) << e;
        EXPECT_NE(e.find(needle), std::string::npos) << e;
        EXPECT_EQ(contextCount(f), 0U);
    };
    expectError("InvalidArgument", "colour", [&] {
        (void)reserve(f, "vm1", {vf[0]}, {{"colour", sdbus::Variant(true)}});
    });
    expectError("InvalidArgument", "owner_pid", [&] {
        (void)reserve(f, "vm1", {vf[0]}, {{"owner_pid", sdbus::Variant(std::string("1"))}});
    });
    expectError("InvalidArgument", "owner_pid", [&] {
        (void)reserve(f, "vm1", {vf[0]}, {{"owner_pid", sdbus::Variant(0U)}});
    });
    expectError("NotFound", "0000:ff:00.0", [&] { (void)reserve(f, "vm1", {"0000:ff:00.0"}); });
    expectError("InvalidArgument", "twice", [&] { (void)reserve(f, "vm1", {vf[0], vf[0]}); });
    expectError("InvalidArgument", "", [&] { (void)reserve(f, "", {vf[0]}); });
    expectError("InvalidArgument", "", [&] { (void)reserve(f, "vm1", {}); });
    // The group check, as for AllocateContext: the GPU's audio function is on a host driver.
    expectError("Busy", kAudio, [&] { (void)reserve(f, "vm1", {kGpu}); });
    // A half-good request takes nothing.
    expectError("NotSupported", "", [&] { (void)reserve(f, "vm1", {vf[0], "0000:6a:01.0"}); });
    // AllocateContext does not take "reserved" for a mode: a reservation has its own call.
    const std::string mode = errorOf([&] {
        (void)allocateContext(*f.proxy(kRoot), "vm1", {vf[0]},
                              {{"mode", sdbus::Variant(std::string("reserved"))}});
    });
    EXPECT_NE(mode.find("InvalidArgument"), std::string::npos) << mode;
    auto r = reserve(f, "vm1", {vf[0]});
    EXPECT_EQ(releaseVm(f, "vm1"), 1U);
}

// The policy is AllocateContext's: rules, auto_bind and its give-back; a rule
// limited to handoff lets a reservation through, one limited to attached not.
TEST(Reservations, ThePolicyAndAutoBindAreThoseOfAContext) {
    TempDir dir;
    const std::string config = dir.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                          << R"(default_policy: deny
rules:
  - name: gpu
    match: {device: ["0000:17:00.0", "0000:17:00.1"]}
    allow: {vms: "vm-gpu"}
    limits: {auto_bind: true, mode: handoff}
  - name: vdpa-attached
    match: {kind: vdpa}
    allow: {vms: "*"}
    limits: {mode: attached}
)";
    SvadFixture f(testHost(), {"--config", config});
    const std::string denied = errorOf([&] { (void)reserve(f, "vm-other", {kGpu}); });
    EXPECT_NE(denied.find("org.svad.Svad1.Error.PolicyDenied"), std::string::npos) << denied;
    const std::string attachedOnly = errorOf([&] { (void)reserve(f, "vm-gpu", {"vdpa0"}); });
    EXPECT_NE(attachedOnly.find("org.svad.Svad1.Error.PolicyDenied"), std::string::npos)
        << attachedOnly;
    EXPECT_NE(attachedOnly.find("attached"), std::string::npos) << attachedOnly;

    ASSERT_EQ(driverOf(f, kAudio), "snd_hda_intel");
    const Reserved r = reserve(f, "vm-gpu", {kGpu});
    EXPECT_EQ(driverOf(f, kAudio), "vfio-pci");
    EXPECT_EQ(r.info.at("nodes").get<Names>().at(kGpu), f.devRoot() + "/vfio/devices/vfio0");
    EXPECT_EQ(releaseVm(f, "vm-gpu"), 1U);
    EXPECT_TRUE(waitUntil([&f] { return driverOf(f, kAudio) == "snd_hda_intel"; }))
        << f.svad().log();
}

TEST(Reservations, SurviveARestartWithTheirOwnersOrWithout) {
    TempDir state;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});
    const auto vf = vfs(f);
    const Reserved waiting = reserve(f, "vm-waiting", {vf[0]});
    const Reserved running = reserve(f, "vm-running", {vf[1]});
    Child vmm;
    (void)setOwner(f, "vm-running", vmm.pid());

    f.restart(SIGKILL);
    ASSERT_EQ(contextCount(f), 2U) << f.svad().log();
    EXPECT_EQ(f.property(waiting.path, kContext, "Mode").get<uint32_t>(), kModeReserved);
    EXPECT_EQ(f.property(running.path, kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(vmm.pid()));
    // The owner's lease is followed again after the restart.
    vmm.kill();
    EXPECT_TRUE(waitUntil([&f] { return contextCount(f) == 1; })) << f.svad().log();
    // One without an owner is held by name across the restart, until released by name.
    f.restart(SIGTERM);
    ASSERT_EQ(contextCount(f), 1U) << f.svad().log();
    const std::string busy =
        errorOf([&] { (void)allocateContext(*f.proxy(kRoot), "vm-x", {vf[0]}); });
    EXPECT_NE(busy.find("org.svad.Svad1.Error.Busy"), std::string::npos) << busy;
    EXPECT_EQ(releaseVm(f, "vm-waiting"), 1U);
    EXPECT_EQ(contextCount(f), 0U);
}

TEST(Reservations, SvactlReservesHandsOverShowsAndReleases) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto r = f.svactl({"vm", "reserve", "vm-cli", vf[0], "wq0.0"});
    ASSERT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("/org/svad/Svad1/context/1"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(f.devRoot() + "/dsa/wq0.0"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("none yet"), std::string::npos) << r.output;
    // svactl has exited: the reservation stays.
    EXPECT_EQ(contextCount(f), 1U);
    r = f.svactl({"vm", "show", "vm-cli"});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("reserved"), std::string::npos) << r.output;
    r = f.svactl({"vm", "show", "vm-none"});
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("holds no reservation"), std::string::npos) << r.errors;

    Child vmm;
    r = f.svactl({"--json", "vm", "owner", "vm-cli", std::to_string(vmm.pid())});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("\"owner_pid\":" + std::to_string(vmm.pid())), std::string::npos)
        << r.output;
    r = f.svactl({"vm", "owner", "vm-none", std::to_string(vmm.pid())});
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("NotFound"), std::string::npos) << r.errors;
    r = f.svactl({"vm", "owner", "vm-cli", "abc"});
    EXPECT_EQ(r.exitCode, 2);

    r = f.svactl({"vm", "release", "vm-cli"});
    EXPECT_EQ(r.exitCode, 0) << r.errors;
    EXPECT_NE(r.output.find("released 1 reservation of vm 'vm-cli'"), std::string::npos)
        << r.output;
    EXPECT_EQ(contextCount(f), 0U);
    r = f.svactl({"vm", "frobnicate"});
    EXPECT_EQ(r.exitCode, 2);
}

// A reserved work queue's node: its owner's uid may open it once the owner is
// named (the VMM opens it itself), and not after the reservation ends.
TEST(Reservations, AQueuesNodeFollowsTheOwnersUid) {
    SvadFixture f(testHost());
    const std::string node = f.devRoot() + "/dsa/wq0.0";
    const Reserved r = reserve(f, "vm-q", {"wq0.0"});
    EXPECT_EQ(r.info.at("nodes").get<Names>().at("wq0.0"), node);
    // A VMM running as another uid (nobody).
    const pid_t vmm = ::fork();
    if (vmm == 0) {
        if (::setresgid(65534, 65534, 65534) == 0 && ::setresuid(65534, 65534, 65534) == 0) {
            ::pause();
        }
        ::_exit(0);
    }
    ASSERT_TRUE(waitUntil([vmm] {
        std::ifstream in("/proc/" + std::to_string(vmm) + "/status");
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind("Uid:", 0) == 0) {
                return line.find("65534") != std::string::npos;
            }
        }
        return false;
    }));
    (void)setOwner(f, "vm-q", vmm);
    EXPECT_EQ(f.property(r.path, kContext, "OwnerUid").get<uint32_t>(), 65534U);
    AclEntries acl = aclOf(node);
    ASSERT_TRUE(acl.read);
    ASSERT_EQ(acl.users.count(65534), 1U) << acl.text;
    EXPECT_EQ(acl.users.at(65534).substr(0, 2), "rw") << acl.text;
    // The VMM exits: the reservation ends, and the entry with it.
    ::kill(vmm, SIGKILL);
    ::waitpid(vmm, nullptr, 0);
    EXPECT_TRUE(waitUntil([&f] { return contextCount(f) == 0; })) << f.svad().log();
    acl = aclOf(node);
    EXPECT_EQ(acl.users.count(65534), 0U) << acl.text;
}

} // namespace
} // namespace svad::test
