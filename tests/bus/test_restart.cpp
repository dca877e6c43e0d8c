// Restarts lose nothing: svad records its contexts in its state directory, and
// after a restart (here SIGKILL, as a crash or a watchdog kill would) it takes
// them back before it owns its name. Without their fds (no service manager
// kept them here) a context comes back as a reservation: same path, same
// devices, FdsHeld false, its devices refused to others until its owner lets
// go. A context whose owner died meanwhile is released through the normal
// path. Context ids are never reused.
#include "fixture.h"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContext = "org.svad.Svad1.Context";

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

TEST(Restart, ContextsComeBackAsReservationsAndIdsAreNeverReused) {
    TempDir state;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});
    const sdbus::ObjectPath first = f.allocate("vm-1", {"wq0.0"});
    EXPECT_TRUE(f.property(first, kContext, "FdsHeld").get<bool>());

    f.restart(SIGKILL);

    // Back at the same path, with the same devices, without its fds; the test's
    // process, its owner, still lives.
    ASSERT_EQ(contextCount(f), 1U) << f.svad().log();
    EXPECT_EQ(f.property(first, kContext, "Devices").get<std::vector<std::string>>(),
              (std::vector<std::string>{"wq0.0"}));
    EXPECT_EQ(f.property(first, kContext, "Vm").get<std::string>(), "vm-1");
    EXPECT_FALSE(f.property(first, kContext, "FdsHeld").get<bool>());
    EXPECT_EQ(f.property("/org/svad/Svad1/queue/wq0_2e0", "org.svad.Svad1.Queue", "HeldBy")
                  .get<std::vector<sdbus::ObjectPath>>(),
              (std::vector<sdbus::ObjectPath>{first}));
    // Its device stays reserved.
    const std::string busy = errorOf([&f] { (void)f.allocate("vm-2", {"wq0.0"}); });
    EXPECT_NE(busy.find("org.svad.Svad1.Error.Busy"), std::string::npos) << busy;

    // A new context gets a new id, never the restored one's.
    const sdbus::ObjectPath second = f.allocate("vm-2", {"wq0.1"});
    EXPECT_NE(second, first);
    EXPECT_EQ(std::string(second), "/org/svad/Svad1/context/2");

    // Its owner releases it: the device is free again, and stays so after another restart.
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(first);
    f.restart(SIGKILL);
    EXPECT_EQ(contextCount(f), 1U) << f.svad().log();
    const sdbus::ObjectPath third = f.allocate("vm-3", {"wq0.0"});
    EXPECT_EQ(std::string(third), "/org/svad/Svad1/context/3");
}

// A damaged database is moved aside, and what it knew of the ids handed out
// with it: the new ids start far above any it counted up to.
TEST(Restart, AfterADamagedDatabaseIsMovedAsideIdsStartFarAbove) {
    TempDir state;
    std::filesystem::create_directories(state.path() + "/state");
    std::ofstream(state.path() + "/state/state.db") << std::string(8192, 'x');
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});
    EXPECT_NE(f.svad().log().find("moved aside"), std::string::npos) << f.svad().log();
    const std::string path = f.allocate("vm-1", {"wq0.0"});
    const uint64_t id = std::stoull(path.substr(path.rfind('/') + 1));
    EXPECT_GE(id, 1'700'000'000U) << path;
}

TEST(Restart, AContextWhoseOwnerDiedWhileSvadWasDownIsReleased) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "naming another owner_pid is for root";
    }
    TempDir state;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});
    const pid_t owner = ::fork();
    ASSERT_GE(owner, 0);
    if (owner == 0) {
        ::pause();
        ::_exit(0);
    }
    (void)allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.0"},
                          {{"owner_pid", sdbus::Variant(static_cast<uint32_t>(owner))}});
    ASSERT_EQ(contextCount(f), 1U);

    // svad goes down; the owner exits while it is away.
    f.svad().signal(SIGSTOP);
    ::kill(owner, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(owner, &status, 0), owner);
    f.restart(SIGKILL);

    ASSERT_TRUE(waitUntil([&f] { return contextCount(f) == 0; })) << f.svad().log();
    EXPECT_NE(f.svad().log().find("owner exited while svad was down"), std::string::npos)
        << f.svad().log();
    EXPECT_NO_THROW((void)f.allocate("vm-2", {"wq0.0"}));
}

// The inode and device of an fd, to know the same open file in another process.
std::pair<dev_t, ino_t> fileOf(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? std::make_pair(st.st_dev, st.st_ino)
                                 : std::make_pair(dev_t{0}, ino_t{0});
}

// Whether process `pid` has the open file `file` among its fds.
bool holds(pid_t pid, std::pair<dev_t, ino_t> file) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
        struct stat st {};
        if (::stat(e.path().c_str(), &st) == 0 && st.st_dev == file.first &&
            st.st_ino == file.second) {
            return true;
        }
    }
    return false;
}

bool storedUnder(FdStoreManager& m, const std::string& prefix) {
    for (const auto& [name, fd] : m.stored()) {
        if (name.rfind(prefix, 0) == 0) {
            return true;
        }
    }
    return false;
}

// Under a service manager (played here by the test: a NOTIFY_SOCKET that keeps
// the fds svad sends with FDSTORE=1, and LISTEN_FDS at the next start), a
// context comes back after a crash with its very fds.
TEST(Restart, UnderAServiceManagerContextsComeBackWithTheirFds) {
    TempDir state;
    FdStoreManager manager(state.path() + "/notify");
    ::setenv("NOTIFY_SOCKET", manager.path().c_str(), 1);
    struct Unset {
        ~Unset() { ::unsetenv("NOTIFY_SOCKET"); }
    } unset;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});

    // A queue has no fd (the client opens its node): the vDPA device's is dev0.
    const Allocated a = allocateContext(*f.proxy(kRoot), "vm-1", {"vdpa0", "wq0.0"});
    const sdbus::ObjectPath& path = a.path;
    const auto iommufdFile = fileOf(a.iommufd.get());
    const auto vdpaFile = fileOf(a.fds.at("vdpa0").get());
    ASSERT_TRUE(waitUntil([&manager] {
        return storedUnder(manager, "ctx1-iommufd") && storedUnder(manager, "ctx1-dev0");
    })) << f.svad().log();
    EXPECT_FALSE(storedUnder(manager, "ctx1-dev1"));

    f.restart(SIGKILL, manager.stored());

    EXPECT_TRUE(f.property(path, kContext, "FdsHeld").get<bool>()) << f.svad().log();
    EXPECT_TRUE(holds(f.svad().pid(), iommufdFile)) << "svad does not hold the context's iommufd";
    EXPECT_TRUE(holds(f.svad().pid(), vdpaFile)) << "svad does not hold the vDPA device's fd";
    const std::string busy = errorOf([&f] { (void)f.allocate("vm-2", {"wq0.0"}); });
    EXPECT_NE(busy.find("org.svad.Svad1.Error.Busy"), std::string::npos) << busy;

    // Released: its fds leave the store.
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(path);
    EXPECT_TRUE(waitUntil([&manager] { return !storedUnder(manager, "ctx1-"); }));
    EXPECT_FALSE(holds(f.svad().pid(), iommufdFile));
}

// Attached mode on a context taken back with its fds: svad still does the
// kernel work for it (the simulated kernel, like a real one, kept the objects
// behind the fds the service manager held). auto_bind took the GPU's group
// mate; after the context is released it goes back to its driver.
TEST(Restart, AttachedModeWorkGoesOnOnAContextTakenBackWithItsFds) {
    TempDir state;
    const std::string config = state.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                          << R"(default_policy: allow
rules:
  - name: gpu
    match: {device: "0000:17:00.0"}
    limits: {auto_bind: true}
)";
    FdStoreManager manager(state.path() + "/notify");
    ::setenv("NOTIFY_SOCKET", manager.path().c_str(), 1);
    struct Unset {
        ~Unset() { ::unsetenv("NOTIFY_SOCKET"); }
    } unset;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state", "--config", config});
    const std::string audio = f.sysfs() + "/bus/pci/devices/0000:17:00.1/driver";

    const sdbus::ObjectPath path =
        allocateContext(*f.proxy(kRoot), "vm-1", {"0000:17:00.0"},
                        {{"mode", sdbus::Variant(std::string("attached"))}})
            .path;
    EXPECT_EQ(std::filesystem::read_symlink(audio).filename(), "vfio-pci");
    auto allocatePasid = [&f, &path] {
        uint32_t pasid = 0;
        f.proxy(kRoot)
            ->callMethod("AllocatePasid")
            .onInterface(kManager)
            .withArguments(path, std::string("0000:17:00.0"),
                           std::map<std::string, sdbus::Variant>{})
            .storeResultsTo(pasid);
        return pasid;
    };
    const uint32_t before = allocatePasid();
    ASSERT_TRUE(waitUntil([&manager] { return storedUnder(manager, "ctx1-dev0"); }));

    f.restart(SIGKILL, manager.stored());
    ASSERT_TRUE(f.property(path, kContext, "FdsHeld").get<bool>()) << f.svad().log();

    // A PASID attached through the fds taken back, next to the one from before.
    uint32_t after = 0;
    const std::string error = errorOf([&] { after = allocatePasid(); });
    EXPECT_EQ(error, "") << f.svad().log();
    EXPECT_NE(after, before);
    const auto pasids = f.property(path, kContext, "Pasids")
                            .get<std::vector<sdbus::Struct<uint32_t, std::string>>>();
    EXPECT_EQ(pasids.size(), 2U);
    // Released: detached and destroyed for real, and the audio function back on its driver.
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(path);
    EXPECT_TRUE(waitUntil([&audio] {
        std::error_code ec; // the link is briefly gone while the driver changes
        return std::filesystem::read_symlink(audio, ec).filename() == "snd_hda_intel";
    }));
    EXPECT_EQ(f.svad().log().find("detach failed"), std::string::npos) << f.svad().log();
    EXPECT_EQ(f.svad().log().find("destroy failed"), std::string::npos) << f.svad().log();
}

} // namespace
} // namespace svad::test
