// Contexts over the bus: a client receives real fds, leases follow their
// owner, every bad request is a named error and nothing leaks in svad.
#include "fixture.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <mutex>
#include <optional>
#include <regex>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kContext = "org.svad.Svad1.Context";
constexpr const char* kDevice = "org.svad.Svad1.Device";

using Options = std::map<std::string, sdbus::Variant>;
struct Allocation {
    sdbus::ObjectPath context;
    sdbus::UnixFd iommufd;
    std::map<std::string, sdbus::UnixFd> fds;
    std::map<std::string, sdbus::Variant> info;
};

Allocation allocate(SvadFixture& f, const std::string& vm, const std::vector<std::string>& devices,
                    const Options& options = {}) {
    Allocation a;
    f.proxy(kRoot)
        ->callMethod("AllocateContext")
        .onInterface(kManager)
        .withArguments(vm, devices, options)
        .storeResultsTo(a.context, a.iommufd, a.fds, a.info);
    return a;
}

void release(SvadFixture& f, const std::string& context) {
    f.proxy(kRoot)
        ->callMethod("ReleaseContext")
        .onInterface(kManager)
        .withArguments(sdbus::ObjectPath(context));
}

uint32_t allocatePasid(SvadFixture& f, const std::string& context, const std::string& device) {
    uint32_t pasid = 0;
    f.proxy(kRoot)
        ->callMethod("AllocatePasid")
        .onInterface(kManager)
        .withArguments(sdbus::ObjectPath(context), device, Options{})
        .storeResultsTo(pasid);
    return pasid;
}

// The D-Bus error name a call fails with ("" if it succeeds).
template <typename F> std::string errorOf(F&& call, std::string* message = nullptr) {
    try {
        call();
    } catch (const sdbus::Error& e) {
        if (message != nullptr) {
            *message = e.getMessage();
        }
        return e.getName();
    }
    return "";
}

std::string fdTarget(int fd) {
    char buf[512] = {};
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// The VFs of the test host's NIC: bound to vfio-pci, one viable group each.
std::vector<std::string> vfs(SvadFixture& f) {
    auto paths = f.property("/org/svad/Svad1/device/0000_3b_00_0", kDevice, "VirtualFunctions")
                     .get<std::vector<sdbus::ObjectPath>>();
    std::vector<std::string> out;
    out.reserve(paths.size());
    for (const auto& p : paths) {
        out.push_back(f.property(p, kDevice, "Address").get<std::string>());
    }
    return out;
}

// Collects Released signals of contexts.
class ReleaseWatcher {
public:
    explicit ReleaseWatcher(const std::string& bus)
        : conn_(sdbus::createSessionBusConnectionWithAddress(bus)) {
        proxy_ = svad::dbus::compat::makeProxy(*conn_, "org.svad.Svad1", kRoot);
        slot_ = svad::dbus::compat::addMatch(
            *conn_,
            "type='signal',sender='org.svad.Svad1',interface='org.svad.Svad1.Context',"
            "member='Released'",
            [this](sdbus::Message& msg) {
                std::string reason;
                msg >> reason;
                std::lock_guard lock(m_);
                reasons_[msg.getPath()] = reason;
                cv_.notify_all();
            });
        conn_->enterEventLoopAsync();
    }
    ~ReleaseWatcher() { conn_->leaveEventLoop(); }
    std::string waitFor(const std::string& path) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return reasons_.count(path) != 0; });
        return reasons_.count(path) != 0 ? reasons_[path] : "(no signal)";
    }

private:
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    sdbus::Slot slot_;
    std::mutex m_;
    std::condition_variable cv_;
    std::map<std::string, std::string> reasons_;
};

TEST(Contexts, HandoffHandsOverRealFds) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ASSERT_EQ(vf.size(), 2U);
    // A first round sets up what svad keeps for good (the first options dict it
    // decodes leaves two eventfds behind); what is measured is growth per round.
    release(f, allocate(f, "warm-up", {vf[0]}, {{"mode", sdbus::Variant(std::string("attached"))}})
                   .context);
    (void)errorOf([&] { allocate(f, "vm1", {vf[0]}, {{"colour", sdbus::Variant(true)}}); });
    const int fdsBefore = fdCount(f.svad().pid());

    auto a = allocate(f, "vm1", {vf[0], "wq0.0", "vdpa0"});
    EXPECT_EQ(a.context.rfind("/org/svad/Svad1/context/", 0), 0U);
    EXPECT_NE(fdTarget(a.iommufd.get()).find("svad-sim:iommufd"), std::string::npos)
        << fdTarget(a.iommufd.get());
    // The queue comes as its node's path, not an fd (tests/bus/test_queue_acl.cpp).
    ASSERT_EQ(a.fds.size(), 2U);
    EXPECT_NE(fdTarget(a.fds.at(vf[0]).get()).find("svad-sim:vfio"), std::string::npos);
    EXPECT_EQ(a.fds.count("wq0.0"), 0U);
    using Nodes = std::map<std::string, std::string>;
    EXPECT_EQ(a.info.at("queue_nodes").get<Nodes>().at("wq0.0"), f.devRoot() + "/dsa/wq0.0");
    EXPECT_NE(fdTarget(a.fds.at("vdpa0").get()).find("svad-sim:vhost-vdpa"), std::string::npos);
    EXPECT_EQ(a.info.at("mode").get<std::string>(), "handoff");
    EXPECT_EQ(a.info.count("ioas_id"), 0U);
    EXPECT_EQ(a.info.count("vdpa_groups"), 1U);

    // The context as a client sees it.
    EXPECT_EQ(f.property(a.context, kContext, "Vm").get<std::string>(), "vm1");
    EXPECT_EQ(f.property(a.context, kContext, "OwnerPid").get<uint32_t>(),
              static_cast<uint32_t>(::getpid()));
    EXPECT_EQ(f.property(a.context, kContext, "OwnerUid").get<uint32_t>(), ::getuid());
    EXPECT_EQ(f.property(a.context, kContext, "Mode").get<uint32_t>(), 1U);
    EXPECT_EQ(f.property(a.context, kContext, "State").get<uint32_t>(), 1U);
    EXPECT_EQ(f.property(a.context, kContext, "Devices").get<std::vector<std::string>>().size(),
              3U);
    const std::string vfPath = "/org/svad/Svad1/device/" + [&] {
        std::string s = vf[0];
        for (char& c : s) {
            c = (c == ':' || c == '.') ? '_' : c;
        }
        return s;
    }();
    EXPECT_EQ(f.property(vfPath, kDevice, "HeldBy").get<sdbus::ObjectPath>(), a.context);
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 1U);

    // A second context on the same device is refused; the other VF is free.
    std::string msg;
    EXPECT_EQ(errorOf([&] { allocate(f, "vm2", {vf[0]}); }, &msg), "org.svad.Svad1.Error.Busy");
    EXPECT_NE(msg.find(vf[0]), std::string::npos) << msg;
    auto b = allocate(f, "vm2", {vf[1]});

    ReleaseWatcher watcher(f.bus());
    release(f, a.context);
    EXPECT_EQ(watcher.waitFor(a.context), "released by the owner");
    EXPECT_EQ(f.property(vfPath, kDevice, "HeldBy").get<sdbus::ObjectPath>(), "/");
    EXPECT_EQ(errorOf([&] { release(f, a.context); }), "org.svad.Svad1.Error.NotFound");
    release(f, b.context);
    // Everything svad opened for the contexts is closed again.
    EXPECT_EQ(fdCount(f.svad().pid()), fdsBefore);
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
}

// The ObjectManager's signals about contexts: the interfaces each names, by path.
class ManagerWatcher {
public:
    using Added = std::map<std::string, std::map<std::string, sdbus::Variant>>;
    explicit ManagerWatcher(const std::string& bus)
        : conn_(sdbus::createSessionBusConnectionWithAddress(bus)) {
        slot_ = svad::dbus::compat::addMatch(
            *conn_,
            "type='signal',sender='org.svad.Svad1',interface='org.freedesktop.DBus.ObjectManager'",
            [this](sdbus::Message& msg) {
                sdbus::ObjectPath path;
                msg >> path;
                std::lock_guard lock(m_);
                if (std::string(msg.getMemberName()) == "InterfacesAdded") {
                    Added interfaces;
                    msg >> interfaces;
                    added_[path] = interfaces;
                } else {
                    std::vector<std::string> names;
                    msg >> names;
                    removed_[path] = names;
                }
                cv_.notify_all();
            });
        conn_->enterEventLoopAsync();
    }
    ~ManagerWatcher() { conn_->leaveEventLoop(); }
    std::optional<Added> added(const std::string& path) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return added_.count(path) != 0; });
        return added_.count(path) != 0 ? std::optional(added_[path]) : std::nullopt;
    }
    std::vector<std::string> removed(const std::string& path) {
        std::unique_lock lock(m_);
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return removed_.count(path) != 0; });
        return removed_[path];
    }

private:
    std::unique_ptr<sdbus::IConnection> conn_;
    sdbus::Slot slot_;
    std::mutex m_;
    std::condition_variable cv_;
    std::map<std::string, Added> added_;
    std::map<std::string, std::vector<std::string>> removed_;
};

// A context's InterfacesAdded carries its interface with every property but
// Pasids (announced by invalidation, so left out), and its InterfacesRemoved
// names that interface: sd-bus reads both from the context's row, which must
// be there when each goes out.
TEST(Contexts, InterfacesAddedAndRemovedNameTheContextInterface) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ManagerWatcher watcher(f.bus());
    auto a = allocate(f, "vm1", {vf[0]});
    const auto added = watcher.added(a.context);
    ASSERT_TRUE(added.has_value()) << a.context;
    ASSERT_EQ(added->count(kContext), 1U);
    const auto& properties = added->at(kContext);
    EXPECT_EQ(properties.size(), 13U);
    EXPECT_EQ(properties.count("Pasids"), 0U);
    EXPECT_EQ(properties.at("Vm").get<std::string>(), "vm1");
    EXPECT_EQ(properties.at("Devices").get<std::vector<std::string>>(),
              std::vector<std::string>{vf[0]});
    release(f, a.context);
    const auto removed = watcher.removed(a.context);
    EXPECT_NE(std::find(removed.begin(), removed.end(), kContext), removed.end())
        << "InterfacesRemoved of " << a.context << " names " << removed.size() << " interfaces";
}

// A context is served from a row, not an object of its own: introspection still
// shows its interface as the XML declares it, signals and their arguments too,
// and GetAll gives every property.
TEST(Contexts, AContextIntrospectsAsItsInterfaceXml) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto a = allocate(f, "vm1", {vf[0]});
    std::string xml;
    f.proxy(a.context)
        ->callMethod("Introspect")
        .onInterface("org.freedesktop.DBus.Introspectable")
        .storeResultsTo(xml);
    const auto start = xml.find("<interface name=\"org.svad.Svad1.Context\">");
    ASSERT_NE(start, std::string::npos) << xml;
    const std::string iface = xml.substr(start, xml.find("</interface>", start) - start);

    std::ifstream in(std::string(SVAD_SOURCE_DIR) + "/dbus/org.svad.Svad1.Context.xml");
    std::stringstream text;
    text << in.rdbuf();
    const std::string declared = text.str();
    const std::regex property(R"re(<property\s+name="([A-Za-z]+)"\s+type="([^"]+)")re");
    size_t properties = 0;
    for (auto it = std::sregex_iterator(declared.begin(), declared.end(), property);
         it != std::sregex_iterator(); ++it, ++properties) {
        EXPECT_NE(iface.find("<property name=\"" + std::string((*it)[1]) + "\" type=\"" +
                             std::string((*it)[2]) + "\" access=\"read\""),
                  std::string::npos)
            << (*it)[1] << " in " << iface;
    }
    EXPECT_EQ(properties, 14U);
    for (const char* signal : {"Released", "Degraded"}) {
        const std::regex shown("<signal name=\"" + std::string(signal) +
                               "\">\\s*<arg type=\"s\" name=\"reason\"/>\\s*</signal>");
        EXPECT_TRUE(std::regex_search(iface, shown)) << signal << " in " << iface;
    }
    std::map<std::string, sdbus::Variant> all;
    f.proxy(a.context)
        ->callMethod("GetAll")
        .onInterface("org.freedesktop.DBus.Properties")
        .withArguments(std::string(kContext))
        .storeResultsTo(all);
    EXPECT_EQ(all.size(), properties);
    EXPECT_EQ(all.at("Vm").get<std::string>(), "vm1");
    release(f, a.context);
    // Gone with its context: no such object any more.
    EXPECT_EQ(errorOf([&] { (void)f.property(a.context, kContext, "Vm"); }),
              "org.freedesktop.DBus.Error.UnknownObject");
}

// A client whose bus connection did not negotiate fd passing cannot receive the
// reply (the bus refuses it): svad takes the context back at once, through the
// normal release, and answers with an error that can reach the client.
TEST(Contexts, AReplyThatCannotBeDeliveredTakesTheContextBack) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ReleaseWatcher watcher(f.bus());

    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(allocateWithoutFdPassing(f.bus(), "vm1", {vf[0]}, 10'000'000ULL),
              "org.svad.Svad1.Error.NotSupported");
    const auto waited = std::chrono::steady_clock::now() - started;
    EXPECT_LT(waited, std::chrono::seconds(5)); // answered, not timed out

    // The device is free again right away, and the context went the normal way.
    const std::string vfPath = "/org/svad/Svad1/device/" + [&] {
        std::string s = vf[0];
        for (char& c : s) {
            c = (c == ':' || c == '.') ? '_' : c;
        }
        return s;
    }();
    EXPECT_EQ(f.property(vfPath, kDevice, "HeldBy").get<sdbus::ObjectPath>(), "/");
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
    EXPECT_EQ(watcher.waitFor("/org/svad/Svad1/context/1"),
              "the reply carrying its fds could not be delivered");
    auto a = allocate(f, "vm2", {vf[0]});
    EXPECT_EQ(f.property(vfPath, kDevice, "HeldBy").get<sdbus::ObjectPath>(), a.context);
    release(f, a.context);
    EXPECT_NE(f.svad().log().find("the bus did not deliver the reply carrying its fds"),
              std::string::npos)
        << f.svad().log();
}

// One delivery check covers every reply sent within its window: a reply the bus
// passed on keeps its context, one it refused in the same window loses its own,
// and only that one.
TEST(Contexts, OneDeliveryCheckCoversDeliveredAndRefusedRepliesAlike) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ASSERT_GE(vf.size(), 2U);
    ReleaseWatcher watcher(f.bus());
    auto a = allocate(f, "vm1", {vf[1]});
    EXPECT_EQ(allocateWithoutFdPassing(f.bus(), "vm2", {vf[0]}, 10'000'000ULL),
              "org.svad.Svad1.Error.NotSupported");
    EXPECT_EQ(watcher.waitFor("/org/svad/Svad1/context/2"),
              "the reply carrying its fds could not be delivered");
    auto b = allocate(f, "vm3", {vf[0]}); // free again at once
    // Past the check's window: the delivered two are still there.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 2U);
    EXPECT_EQ(f.property(a.context, kContext, "State").get<uint32_t>(), 1U); // active
    EXPECT_EQ(f.property(b.context, kContext, "State").get<uint32_t>(), 1U);
    release(f, a.context);
    release(f, b.context);
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
}

TEST(Contexts, AttachedModeBindsAndReportsIds) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto a = allocate(
        f, "vm1", {vf[0]},
        {{"mode", sdbus::Variant(std::string("attached"))}, {"fault_queue", sdbus::Variant(true)}});
    EXPECT_EQ(a.info.at("mode").get<std::string>(), "attached");
    const uint32_t ioas = a.info.at("ioas_id").get<uint32_t>();
    EXPECT_GT(ioas, 0U);
    auto devIds = a.info.at("dev_ids").get<std::map<std::string, uint32_t>>();
    ASSERT_EQ(devIds.count(vf[0]), 1U);
    EXPECT_GT(devIds.at(vf[0]), 0U);
    EXPECT_NE(devIds.at(vf[0]), ioas);
    EXPECT_EQ(f.property(a.context, kContext, "IoasId").get<uint32_t>(), ioas);
    auto fq = a.info.at("fault_queue_fd").get<sdbus::UnixFd>();
    EXPECT_NE(fdTarget(fq.get()).find("svad-sim:fault"), std::string::npos) << fdTarget(fq.get());
    EXPECT_GT(f.property(a.context, kContext, "FaultQueueId").get<uint32_t>(), 0U);
    release(f, a.context);
}

TEST(Contexts, PasidsAreHostWideAndBounded) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto a = allocate(f, "vm1", {"wq0.0", vf[0]});
    auto b = allocate(f, "vm2", {"wq0.1"});
    const uint32_t p1 = allocatePasid(f, a.context, "wq0.0");
    const uint32_t p2 = allocatePasid(f, b.context, "wq0.1");
    EXPECT_GE(p1, 1U);
    EXPECT_NE(p1, p2); // unique across VMs
    EXPECT_LT(p2, 1U << 20);
    EXPECT_EQ(f.property(kRoot, kManager, "PasidCount").get<uint32_t>(), 2U);
    auto pasids = f.property(a.context, kContext, "Pasids")
                      .get<std::vector<sdbus::Struct<uint32_t, std::string>>>();
    ASSERT_EQ(pasids.size(), 1U);
    EXPECT_EQ(std::get<0>(pasids[0]), p1);

    // The VF's PF has no PASID capability: NotSupported, with the reason.
    std::string msg;
    EXPECT_EQ(errorOf([&] { allocatePasid(f, a.context, vf[0]); }, &msg),
              "org.svad.Svad1.Error.NotSupported");
    EXPECT_NE(msg.find("PASID"), std::string::npos);
    EXPECT_EQ(errorOf([&] { allocatePasid(f, a.context, "wq0.1"); }),
              "org.svad.Svad1.Error.InvalidArgument");

    // The default quota is 256 PASIDs per VM.
    std::string quotaError;
    for (int i = 0; i < 300 && quotaError.empty(); ++i) {
        quotaError = errorOf([&] { allocatePasid(f, a.context, "wq0.0"); });
    }
    EXPECT_EQ(quotaError, "org.svad.Svad1.Error.QuotaExceeded");

    f.proxy(kRoot)->callMethod("ReleasePasid").onInterface(kManager).withArguments(b.context, p2);
    EXPECT_EQ(errorOf([&] {
                  f.proxy(kRoot)
                      ->callMethod("ReleasePasid")
                      .onInterface(kManager)
                      .withArguments(b.context, p2);
              }),
              "org.svad.Svad1.Error.NotFound");
    release(f, a.context);
    EXPECT_EQ(f.property(kRoot, kManager, "PasidCount").get<uint32_t>(), 0U);
    release(f, b.context);
}

// A shared queue in three contexts lists all three, and fewer as they release.
TEST(Contexts, SharedQueueListsEveryHolder) {
    SvadFixture f(testHost());
    const std::string queue = "/org/svad/Svad1/queue/wq0_2e1"; // wq0.1, shared
    auto heldBy = [&f, &queue] {
        return f.property(queue, "org.svad.Svad1.Queue", "HeldBy")
            .get<std::vector<sdbus::ObjectPath>>();
    };
    using Paths = std::vector<sdbus::ObjectPath>;
    EXPECT_EQ(heldBy(), Paths{});
    auto a = allocate(f, "vm1", {"wq0.1"});
    auto b = allocate(f, "vm2", {"wq0.1"});
    auto c = allocate(f, "vm3", {"wq0.1"});
    EXPECT_EQ(heldBy(), (Paths{a.context, b.context, c.context}));
    release(f, b.context);
    EXPECT_EQ(heldBy(), (Paths{a.context, c.context}));
    release(f, a.context);
    EXPECT_EQ(heldBy(), Paths{c.context});
    release(f, c.context);
    EXPECT_EQ(heldBy(), Paths{});
}

// Each AllocatePasid and ReleasePasid announces itself with a PropertiesChanged
// that names Pasids as invalidated and carries no list: the same message at the
// first PASID as at the two hundredth. The list itself is read on demand.
TEST(Contexts, PasidChangesCostTheSameWhateverIsHeld) {
    SvadFixture f(testHost());
    auto a = allocate(f, "vm1", {"wq0.0"});
    struct Change {
        std::map<std::string, sdbus::Variant> changed;
        std::vector<std::string> invalidated;
    };
    std::mutex m;
    std::condition_variable cv;
    std::vector<Change> changes;
    auto conn = sdbus::createSessionBusConnectionWithAddress(f.bus());
    auto slot = svad::dbus::compat::addMatch(
        *conn,
        "type='signal',sender='org.svad.Svad1',interface='org.freedesktop.DBus.Properties',"
        "member='PropertiesChanged',path='" +
            std::string(a.context) + "'",
        [&m, &cv, &changes](sdbus::Message& msg) {
            std::string iface;
            Change c;
            msg >> iface >> c.changed >> c.invalidated;
            std::lock_guard lock(m);
            changes.push_back(std::move(c));
            cv.notify_all();
        });
    conn->enterEventLoopAsync();

    constexpr size_t kPasids = 200; // within the default quota of 256
    std::vector<uint32_t> held;
    for (size_t i = 0; i < kPasids; ++i) {
        held.push_back(allocatePasid(f, a.context, "wq0.0"));
    }
    for (size_t i = 0; i < 10; ++i) {
        f.proxy(kRoot)
            ->callMethod("ReleasePasid")
            .onInterface(kManager)
            .withArguments(a.context, held[i]);
    }
    {
        std::unique_lock lock(m);
        cv.wait_for(lock, std::chrono::seconds(10),
                    [&changes] { return changes.size() >= kPasids + 10; });
        ASSERT_EQ(changes.size(), kPasids + 10);
        for (size_t i = 0; i < changes.size(); ++i) {
            SCOPED_TRACE("change " + std::to_string(i));
            EXPECT_TRUE(changes[i].changed.empty()) << changes[i].changed.size() << " values";
            EXPECT_EQ(changes[i].invalidated, std::vector<std::string>{"Pasids"});
        }
    }
    conn->leaveEventLoop();
    // The list is there for whoever asks.
    using PasidList = std::vector<sdbus::Struct<uint32_t, std::string>>;
    EXPECT_EQ(f.property(a.context, kContext, "Pasids").get<PasidList>().size(), kPasids - 10);
}

TEST(Contexts, VirtualIdTable) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto a = allocate(f, "vm1", {vf[0], "vdpa0"});
    auto setId = [&f, &a](const std::string& dev, uint64_t id) {
        f.proxy(kRoot)
            ->callMethod("SetVirtualId")
            .onInterface(kManager)
            .withArguments(a.context, dev, id);
    };
    setId(vf[0], 0x0800);
    setId("vdpa0", 0x0808);
    auto table = f.property(a.context, kContext, "VirtualIds")
                     .get<std::vector<sdbus::Struct<std::string, uint64_t>>>();
    ASSERT_EQ(table.size(), 2U);
    EXPECT_EQ(errorOf([&] { setId("vdpa0", 0x0800); }), "org.svad.Svad1.Error.Busy");
    EXPECT_EQ(errorOf([&] { setId("wq0.0", 1); }), "org.svad.Svad1.Error.InvalidArgument");
    release(f, a.context);
}

TEST(Contexts, OwnerExitReleases) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    ReleaseWatcher watcher(f.bus());
    // busctl allocates and exits: the lease ends with it.
    auto r = runCommand({"busctl", "--address=" + f.bus(), "call", "org.svad.Svad1", kRoot,
                         kManager, "AllocateContext", "sasa{sv}", "short-lived", "1", vf[0], "0"});
    ASSERT_EQ(r.exitCode, 0) << r.errors << "\nsvad's log:\n" << f.svad().log();
    auto start = r.output.find('"');
    auto end = r.output.find('"', start + 1);
    const std::string path = r.output.substr(start + 1, end - start - 1);
    EXPECT_EQ(watcher.waitFor(path), "owner process exited");
    for (int i = 0; i < 200 && f.property(kRoot, kManager, "ContextCount").get<uint32_t>() != 0;
         ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
    // The device is free again.
    auto a = allocate(f, "vm1", {vf[0]});
    release(f, a.context);
}

TEST(Contexts, BadRequestsAreNamedErrorsAndLeakNothing) {
    SvadFixture f(testHost());
    const auto vf = vfs(f);
    auto round = [&f, &vf] {
        std::string msg;
        EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {"0000:ff:00.0"}); }, &msg),
                  "org.svad.Svad1.Error.NotFound");
        EXPECT_NE(msg.find("0000:ff:00.0"), std::string::npos);
        EXPECT_EQ(errorOf(
                      [&] {
                          allocate(f, "vm1", {vf[0], vf[0]});
                      },
                      &msg),
                  "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_NE(msg.find("twice"), std::string::npos);
        EXPECT_EQ(errorOf([&] { allocate(f, "", {vf[0]}); }),
                  "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {}); }), "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_EQ(errorOf(
                      [&] {
                          allocate(f, "vm1", {vf[0]}, {{"colour", sdbus::Variant(true)}});
                      },
                      &msg),
                  "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_NE(msg.find("colour"), std::string::npos);
        EXPECT_EQ(errorOf([&] {
                      allocate(f, "vm1", {vf[0]}, {{"mode", sdbus::Variant(uint32_t{1})}});
                  }),
                  "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_EQ(errorOf([&] {
                      allocate(f, "vm1", {vf[0]}, {{"mode", sdbus::Variant(std::string("both"))}});
                  }),
                  "org.svad.Svad1.Error.InvalidArgument");
        // The GPU's group holds its audio function on a host driver.
        EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {"0000:17:00.0"}); }, &msg),
                  "org.svad.Svad1.Error.Busy");
        EXPECT_NE(msg.find("0000:17:00.1"), std::string::npos) << msg;
        // The DSA itself is on idxd: no VFIO cdev.
        EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {"0000:6a:01.0"}); }, &msg),
                  "org.svad.Svad1.Error.NotSupported");
        EXPECT_NE(msg.find("vfio-pci"), std::string::npos) << msg;
        // A kernel queue is not for VMs.
        EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {"wq0.2"}); }),
                  "org.svad.Svad1.Error.NotSupported");
        // A half-good request takes nothing: the good device stays free.
        EXPECT_EQ(errorOf([&] {
                      allocate(f, "vm1", {vf[0], "0000:6a:01.0"});
                  }),
                  "org.svad.Svad1.Error.NotSupported");
        EXPECT_EQ(errorOf([&] { release(f, "/org/svad/Svad1/context/99"); }),
                  "org.svad.Svad1.Error.NotFound");
        EXPECT_EQ(errorOf([&] { release(f, "/org/svad/Svad1/device/0000_3b_00_0"); }),
                  "org.svad.Svad1.Error.NotFound");
        EXPECT_EQ(errorOf([&] { allocatePasid(f, "/org/svad/Svad1/context/99", "wq0.0"); }),
                  "org.svad.Svad1.Error.NotFound");
    };
    round();
    const int fdsBefore = fdCount(f.svad().pid());
    round();
    round();
    EXPECT_EQ(fdCount(f.svad().pid()), fdsBefore);
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
    EXPECT_TRUE(f.svad().running());
    auto a = allocate(f, "vm1", {vf[0]});
    release(f, a.context);
    EXPECT_EQ(fdCount(f.svad().pid()), fdsBefore);
}

TEST(Contexts, HotAddedDeviceCanBeAllocatedAfterRescan) {
    SvadFixture f(testHost());
    hostgen::HostSpec extra;
    hostgen::DeviceSpec nic;
    nic.address = "0000:d8:00.0";
    nic.vendor = 0x8086;
    nic.device = 0x1592;
    nic.classCode = 0x020000;
    nic.driver = "vfio-pci";
    nic.vfio = 9;
    nic.group = 99; // VFIO isolates by IOMMU group: the vfio plugin refuses a function without
    extra.devices.push_back(nic);
    hostgen::GroupSpec group;
    group.id = 99;
    extra.groups.push_back(group);
    const std::string other = f.root() + "/other";
    hostgen::writeTree(extra, other);
    std::filesystem::copy(std::filesystem::canonical(other + "/sys/bus/pci/devices/0000:d8:00.0"),
                          f.sysfs() + "/bus/pci/devices/0000:d8:00.0",
                          std::filesystem::copy_options::recursive |
                              std::filesystem::copy_options::copy_symlinks);
    std::filesystem::copy(
        other + "/sys/kernel/iommu_groups/99", f.sysfs() + "/kernel/iommu_groups/99",
        std::filesystem::copy_options::recursive | std::filesystem::copy_options::copy_symlinks);
    EXPECT_EQ(errorOf([&] { allocate(f, "vm1", {"0000:d8:00.0"}); }),
              "org.svad.Svad1.Error.NotFound");
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    auto a = allocate(f, "vm1", {"0000:d8:00.0"});
    EXPECT_NE(fdTarget(a.fds.at("0000:d8:00.0").get()).find("vfio9"), std::string::npos);
    release(f, a.context);
}

TEST(Contexts, KernelFeaturesArePublished) {
    SvadFixture f(testHost());
    auto features =
        f.property(kRoot, kManager, "KernelFeatures").get<std::map<std::string, bool>>();
    EXPECT_EQ(features.size(), 8U);
    EXPECT_TRUE(features.at("iommufd"));
    EXPECT_TRUE(features.at("vfio_cdev"));
}

} // namespace
} // namespace svad::test
