// Replies that fit: on a system-type bus (dbus-daemon's default 32 MiB
// max_message_size, which a session bus raises to 1 GB), a large host is listed
// page by page, GetManagedObjects is refused rather than sent over the limit,
// and svad stays on the bus whatever a caller asks.
#include "fixture.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <string>
#include <sys/statfs.h>
#include <unistd.h>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

using Tree =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

// Every page of ListObjects from `start`, with `limit` objects a page.
Tree readPages(SvadFixture& f, uint32_t limit, size_t* pages = nullptr) {
    auto manager = f.proxy(kRoot);
    Tree all;
    std::string start;
    size_t n = 0;
    for (;;) {
        Tree page;
        std::string next;
        manager->callMethod("ListObjects")
            .onInterface(kManager)
            .withArguments(start, limit)
            .storeResultsTo(page, next);
        ++n;
        EXPECT_FALSE(page.empty());
        if (limit != 0) {
            EXPECT_LE(page.size(), limit);
        }
        for (auto& [path, ifaces] : page) {
            EXPECT_GE(std::string(path), start);
            EXPECT_TRUE(all.emplace(path, std::move(ifaces)).second) << "twice: " << path;
        }
        if (next.empty()) {
            break;
        }
        EXPECT_GT(next, std::string(page.rbegin()->first));
        start = next;
    }
    if (pages != nullptr) {
        *pages = n;
    }
    return all;
}

// Every page of ListObjectsWithProperties(start, limit, names).
Tree readPagesWith(SvadFixture& f, uint32_t limit, const std::vector<std::string>& names) {
    Tree all;
    std::string start;
    for (int guard = 0; guard < 10000; ++guard) {
        Tree page;
        std::string next;
        f.proxy(kRoot)
            ->callMethod("ListObjectsWithProperties")
            .onInterface(kManager)
            .withArguments(start, limit, names)
            .storeResultsTo(page, next);
        for (auto& [path, ifaces] : page) {
            EXPECT_TRUE(all.emplace(path, std::move(ifaces)).second) << "twice: " << path;
        }
        if (next.empty()) {
            break;
        }
        start = next;
    }
    return all;
}

// Where a tree of half a million small files is cheap to write and to remove:
// a tmpfs (/dev/shm on Debian) when there is one, else the temporary directory.
// (Removing such a tree from a disk mounted with `discard` takes minutes.)
std::string scratchBase() {
    struct statfs st {};
    if (::statfs("/dev/shm", &st) == 0 && st.f_type == TMPFS_MAGIC &&
        ::access("/dev/shm", W_OK) == 0) {
        return "/dev/shm";
    }
    return std::filesystem::temp_directory_path().string();
}

bool svadAnswersPing(SvadFixture& f) {
    try {
        f.proxy(kRoot)
            ->callMethod("Ping")
            .onInterface("org.freedesktop.DBus.Peer")
            .withTimeout(std::chrono::seconds(20));
        return true;
    } catch (const sdbus::Error&) {
        return false;
    }
}

// The pages hold what GetManagedObjects holds: every object, every property,
// the same values (on a host small enough for GetManagedObjects).
TEST(Listing, PagesHoldWhatGetManagedObjectsHolds) {
    SvadFixture f(testHost());
    f.allocate("vm-pages", {"wq0.1"}); // a context object too
    Tree managed;
    f.proxy(kRoot)
        ->callMethod("GetManagedObjects")
        .onInterface("org.freedesktop.DBus.ObjectManager")
        .storeResultsTo(managed);
    size_t pages = 0;
    Tree paged = readPages(f, 3, &pages);
    EXPECT_EQ(pages, (managed.size() + 2) / 3);
    for (const auto& [path, i] : managed) {
        if (paged.count(path) == 0) {
            ADD_FAILURE() << "missing " << path;
        }
    }
    ASSERT_EQ(paged.size(), managed.size());
    size_t properties = 0;
    for (const auto& [path, ifaces] : managed) {
        auto it = paged.find(path);
        ASSERT_NE(it, paged.end()) << path;
        for (const auto& [iface, props] : ifaces) {
            if (iface.rfind("org.svad.Svad1.", 0) != 0) {
                continue; // Peer, Introspectable, Properties: no properties of their own
            }
            auto got = it->second.find(iface);
            ASSERT_NE(got, it->second.end()) << path << " " << iface;
            ASSERT_EQ(got->second.size(), props.size()) << path << " " << iface;
            for (const auto& [name, value] : props) {
                auto p = got->second.find(name);
                ASSERT_NE(p, got->second.end()) << path << " " << name;
                EXPECT_EQ(std::string(p->second.peekValueType()),
                          std::string(value.peekValueType()))
                    << path << " " << name;
                ++properties;
            }
        }
    }
    EXPECT_GT(properties, 300U);
    EXPECT_EQ(paged.count(sdbus::ObjectPath("/org/svad/Svad1/context/1")), 1U);

    // A start inside the tree begins there; past its end, an empty page.
    auto manager = f.proxy(kRoot);
    Tree page;
    std::string next;
    manager->callMethod("ListObjects")
        .onInterface(kManager)
        .withArguments(std::string("/org/svad/Svad1/queue/"), uint32_t{1})
        .storeResultsTo(page, next);
    ASSERT_EQ(page.size(), 1U);
    EXPECT_EQ(std::string(page.begin()->first), "/org/svad/Svad1/queue/wq0_2e0");
    EXPECT_EQ(next, "/org/svad/Svad1/queue/wq0_2e1");
    Tree past;
    std::string none = "?";
    manager->callMethod("ListObjects")
        .onInterface(kManager)
        .withArguments(std::string("/org/svad/Svad1/zzz"), uint32_t{0})
        .storeResultsTo(past, none);
    EXPECT_TRUE(past.empty());
    EXPECT_EQ(none, "");
}

// 16,384 functions on a system-type bus: svactl lists them all, GetManagedObjects
// is answered with TooLarge instead of a reply the bus would drop svad for, a
// caller's near-32 MiB filter key gets a short error, and svad stays on the bus.
TEST(Listing, ALargeHostFitsOnASystemBus) {
    TempDir conf;
    TempDir tree(scratchBase());
    const uint32_t functions = 16384;
    SvadFixture f(hostgen::synthesize(functions), {}, tree.path(), systemBusConfig(conf, false));
    const uint32_t devices = f.property(kRoot, kManager, "DeviceCount").get<uint32_t>();
    ASSERT_GE(devices, functions);

    auto listing = f.svactl({"devices"});
    ASSERT_EQ(listing.exitCode, 0) << listing.errors;
    const auto lines =
        static_cast<uint32_t>(std::count(listing.output.begin(), listing.output.end(), '\n'));
    EXPECT_EQ(lines, devices + 1) << "a header and one line per PCI function";
    EXPECT_TRUE(svadAnswersPing(f));

    // All of it in one reply would pass the bus's limit: refused, by name.
    std::string error;
    try {
        Tree managed;
        f.proxy(kRoot)
            ->callMethod("GetManagedObjects")
            .onInterface("org.freedesktop.DBus.ObjectManager")
            .storeResultsTo(managed);
    } catch (const sdbus::Error& e) {
        error = e.getName() + ": " + e.getMessage();
    }
    EXPECT_EQ(error.rfind("org.svad.Svad1.Error.TooLarge: ", 0), 0U) << error;
    EXPECT_NE(error.find("ListObjects"), std::string::npos) << error;
    EXPECT_TRUE(svadAnswersPing(f)) << "svad left the bus";

    // A filter key just under the bus's limit: the error names it, cut short.
    const std::string key((size_t{32} << 20) - 4096, 'k');
    try {
        std::vector<sdbus::ObjectPath> out;
        f.proxy(kRoot)
            ->callMethod("ListDevices")
            .onInterface(kManager)
            .withTimeout(std::chrono::seconds(60))
            .withArguments(std::map<std::string, sdbus::Variant>{{key, sdbus::Variant(true)}})
            .storeResultsTo(out);
        ADD_FAILURE() << "an unknown filter key was accepted";
    } catch (const sdbus::Error& e) {
        EXPECT_EQ(e.getName(), "org.svad.Svad1.Error.InvalidArgument");
        EXPECT_LT(e.getMessage().size(), size_t{16384});
    }
    EXPECT_TRUE(svadAnswersPing(f)) << "svad left the bus: " << f.svad().log();
    auto status = f.svactl({"status"});
    EXPECT_EQ(status.exitCode, 0) << status.errors;
    EXPECT_EQ(f.svad().wait(0), -1) << "svad exited: " << f.svad().log();
}

// Pages that carry only the named properties: the same objects, those of their
// properties with the values GetManagedObjects gives, and nothing else.
TEST(Listing, PagesWithPropertiesCarryOnlyThose) {
    SvadFixture f(testHost());
    f.allocate("vm-some", {"wq0.1"});
    Tree managed;
    f.proxy(kRoot)
        ->callMethod("GetManagedObjects")
        .onInterface("org.freedesktop.DBus.ObjectManager")
        .storeResultsTo(managed);
    const std::vector<std::string> names = {"Address", "Driver", "Vm", "NoSuchProperty"};
    const Tree some = readPagesWith(f, 3, names);
    ASSERT_EQ(some.size(), managed.size());
    size_t carried = 0;
    for (const auto& [path, ifaces] : managed) {
        auto it = some.find(path);
        ASSERT_NE(it, some.end()) << path;
        for (const auto& [iface, props] : ifaces) {
            if (iface.rfind("org.svad.Svad1.", 0) != 0) {
                continue;
            }
            auto got = it->second.find(iface);
            ASSERT_NE(got, it->second.end()) << path << " " << iface;
            size_t expected = 0;
            for (const auto& n : names) {
                auto want = props.find(n);
                if (want == props.end()) {
                    EXPECT_EQ(got->second.count(n), 0U) << path << " " << n;
                    continue;
                }
                ++expected;
                auto p = got->second.find(n);
                ASSERT_NE(p, got->second.end()) << path << " " << n;
                EXPECT_EQ(p->second.get<std::string>(), want->second.get<std::string>())
                    << path << " " << n;
                ++carried;
            }
            EXPECT_EQ(got->second.size(), expected) << path << " " << iface;
        }
    }
    EXPECT_GT(carried, 10U); // two of each device, the context's Vm
    EXPECT_EQ(some.at(sdbus::ObjectPath("/org/svad/Svad1/context/1"))
                  .at("org.svad.Svad1.Context")
                  .at("Vm")
                  .get<std::string>(),
              "vm-some");

    // No names: every property, as ListObjects gives them.
    const Tree all = readPagesWith(f, 0, {});
    const Tree plain = readPages(f, 0);
    ASSERT_EQ(all.size(), plain.size());
    for (const auto& [path, ifaces] : plain) {
        for (const auto& [iface, props] : ifaces) {
            EXPECT_EQ(all.at(path).at(iface).size(), props.size()) << path;
        }
    }
}

TEST(Listing, TooManyOrTooLongPropertyNamesAreRefused) {
    SvadFixture f(testHost());
    auto call = [&f](const std::vector<std::string>& names) {
        Tree page;
        std::string next;
        try {
            f.proxy(kRoot)
                ->callMethod("ListObjectsWithProperties")
                .onInterface(kManager)
                .withArguments(std::string(), uint32_t{1}, names)
                .storeResultsTo(page, next);
            return std::string("ok");
        } catch (const sdbus::Error& e) {
            EXPECT_LT(e.getMessage().size(), 200U) << e.getMessage();
            return std::string(e.getName());
        }
    };
    EXPECT_EQ(call(std::vector<std::string>(256, "Address")), "ok");
    EXPECT_EQ(call(std::vector<std::string>(257, "Address")),
              "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_EQ(call({std::string(255, 'x')}), "ok");
    EXPECT_EQ(call({std::string(256, 'x')}), "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_EQ(call(std::vector<std::string>(10000, "Address")),
              "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_TRUE(svadAnswersPing(f));
}

} // namespace
} // namespace svad::test
