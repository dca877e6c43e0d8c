// Odd input, from sysfs and from callers: whatever root writes into sysfs and
// whatever a caller sends, svad stays on the bus, publishes valid UTF-8 and
// echoes input only in part.
#include "fixture.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace svad::test {
namespace {

namespace fs = std::filesystem;
using Objects =
    std::map<sdbus::ObjectPath, std::map<std::string, std::map<std::string, sdbus::Variant>>>;

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

// The file or directory a sysfs path leads to (through the tree's links).
fs::path real(const std::string& sys, const std::string& rel) {
    return fs::canonical(fs::path(sys) / rel);
}

void writeFile(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::trunc | std::ios::binary) << bytes;
}

// Points the link at `p` to the same place with its last component renamed.
void retarget(const fs::path& link, const std::string& newBase) {
    fs::path target = fs::read_symlink(link);
    fs::remove(link);
    fs::create_symlink(target.parent_path() / newBase, link);
}

// Renames the directory a link leads to, and the link with it (same new name).
void renameLinked(const std::string& sys, const std::string& linkRel, const std::string& newName) {
    const fs::path link = fs::path(sys) / linkRel;
    const fs::path dir = fs::canonical(link);
    fs::rename(dir, dir.parent_path() / newName);
    const fs::path target = fs::read_symlink(link).parent_path() / newName;
    fs::remove(link);
    fs::create_symlink(target, link.parent_path() / newName);
}

// Invalid and cut UTF-8 in every kind of name and value discovery reads from
// the bus tests' host.
void spoil(const std::string& sys) {
    // Values.
    writeFile(real(sys, "bus/dsa/devices/wq0.0/name"), "app\xff\xc3\n");
    writeFile(real(sys, "bus/dsa/devices/wq0.1/name"), "\xef\xbf\xbf\xed\xa0\x80\xc0\xaf\n");
    writeFile(real(sys, "bus/pci/devices/0000:17:00.1/driver_override"), "snd\xff\n");
    writeFile(real(sys, "kernel/iommu_groups/4/type"), "DMA\xed\xa0\x80\n");
    writeFile(real(sys, "kernel/iommu_groups/1/reserved_regions"),
              "0x00000000fee00000 0x00000000feefffff ms\xffi\n" + std::string(63, 'z') +
                  "\xc3\xa9\n");
    writeFile(real(sys, "class/iommu/dmar0/intel-iommu/version"), "6:\xff\n");
    writeFile(real(sys, "bus/pci/devices/0000:5e:00.0/class"),
              std::string(31, '1') + "\xe2\x82\xac\n");
    // Names read from links.
    retarget(fs::path(sys) / "bus/pci/devices/0000:3b:00.0/driver", "mlx5\xe2\x82");
    retarget(real(sys, "bus/vdpa/devices/vdpa0") / "driver", "vhost\xc0\xaf");
    retarget(fs::path(sys) / "bus/pci/devices/0000:5e:00.0/iommu", "dm\xf4\x90\x80\x80");
    retarget(fs::path(sys) / "bus/pci/devices/0000:17:00.1/iommu_group", "x\xff");
    fs::create_symlink("../0000:3b:00.0", real(sys, "bus/pci/devices/0000:3b:00.0") / "virtfn\xfe");
    // Names read from directories.
    renameLinked(sys, "bus/vdpa/devices/vdpa0",
                 "vdpa\xfe"
                 "0");
    {
        // A software device's management device is the directory above it.
        const fs::path link = fs::path(sys) / "bus/vdpa/devices/vdpa-sim0";
        const fs::path sim = fs::canonical(link).parent_path();
        fs::rename(sim, sim.parent_path() / "vdpasim\xff");
        const fs::path target =
            fs::read_symlink(link).parent_path().parent_path() / "vdpasim\xff" / "vdpa-sim0";
        fs::remove(link);
        fs::create_symlink(target, link);
    }
    const fs::path vfio = real(sys, "bus/pci/devices/0000:17:00.0/vfio-dev/vfio0");
    fs::rename(vfio, vfio.parent_path() / "vfio\xff");
    fs::create_directories(fs::path(sys) / "kernel/iommu_groups/9\xff");
    fs::create_directories(fs::path(sys) / "bus/pci/devices/junk\xff");
    fs::create_directories(fs::path(sys) / "class/iommu/dm\xff"
                                           "ar9");
}

Objects managedObjects(SvadFixture& f) {
    Objects objects;
    f.proxy(kRoot)
        ->callMethod("GetManagedObjects")
        .onInterface("org.freedesktop.DBus.ObjectManager")
        .storeResultsTo(objects);
    return objects;
}

std::map<std::string, sdbus::Variant> managerProperties(SvadFixture& f) {
    std::map<std::string, sdbus::Variant> props;
    f.proxy(kRoot)
        ->callMethod("GetAll")
        .onInterface("org.freedesktop.DBus.Properties")
        .withArguments(std::string(kManager))
        .storeResultsTo(props);
    return props;
}

void ping(SvadFixture& f) {
    f.proxy(kRoot)->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
}

// Property `name` of `iface` on the object whose `key` property is `value`.
std::string stringOf(const Objects& objects, const std::string& iface, const std::string& key,
                     const std::string& value, const std::string& name) {
    for (const auto& [path, ifaces] : objects) {
        auto it = ifaces.find(iface);
        if (it != ifaces.end() && it->second.count(key) != 0 &&
            it->second.at(key).get<std::string>() == value) {
            return it->second.at(name).get<std::string>();
        }
    }
    return "<no object with " + key + " " + value + ">";
}

bool anyWarning(const Objects& objects, const std::string& needle) {
    for (const auto& [path, ifaces] : objects) {
        for (const auto& [iface, props] : ifaces) {
            auto it = props.find("Warnings");
            if (it == props.end()) {
                continue;
            }
            for (const auto& w : it->second.get<std::vector<std::string>>()) {
                if (w.find(needle) != std::string::npos) {
                    return true;
                }
            }
        }
    }
    return false;
}

// What the spoiled host looks like over the bus, escapes and cuts included.
void expectSpoiledHostReadsBack(SvadFixture& f) {
    ASSERT_TRUE(f.svad().running()) << f.svad().log();
    ping(f);
    const Objects objects = managedObjects(f);
    const char* queue = "org.svad.Svad1.Queue";
    const char* device = "org.svad.Svad1.Device";
    EXPECT_EQ(stringOf(objects, queue, "Name", "wq0.0", "WqName"), "app\\xff\\xc3");
    EXPECT_EQ(stringOf(objects, queue, "Name", "wq0.1", "WqName"),
              "\\xef\\xbf\\xbf\\xed\\xa0\\x80\\xc0\\xaf");
    EXPECT_EQ(stringOf(objects, device, "Address", "0000:3b:00.0", "Driver"), "mlx5\\xe2\\x82");
    EXPECT_EQ(stringOf(objects, device, "Address", "vdpa\\xfe0", "Driver"), "vhost\\xc0\\xaf");
    EXPECT_EQ(stringOf(objects, device, "Address", "vdpa-sim0", "VdpaManagementDevice"),
              "vdpasim\\xff");
    EXPECT_EQ(stringOf(objects, device, "Address", "0000:17:00.1", "DriverOverride"), "snd\\xff");
    EXPECT_EQ(stringOf(objects, device, "Address", "0000:17:00.0", "VfioDevice"), "vfio\\xff");
    EXPECT_EQ(objects.at(sdbus::ObjectPath("/org/svad/Svad1/group/4"))
                  .at("org.svad.Svad1.Group")
                  .at("TypeName")
                  .get<std::string>(),
              "DMA\\xed\\xa0\\x80");
    EXPECT_EQ(stringOf(objects, "org.svad.Svad1.Unit", "Name", "dmar0", "Version"), "6:\\xff");
    EXPECT_EQ(stringOf(objects, "org.svad.Svad1.Unit", "Name", "dm\\xffar9", "Name"), "dm\\xffar9");
    EXPECT_TRUE(anyWarning(objects, std::string(63, 'z') + "\u2026(65 bytes)"));
    EXPECT_TRUE(anyWarning(objects, std::string(31, '1') + "\u2026(34 bytes)"));
    EXPECT_TRUE(anyWarning(objects, "iommu_group: the link does not lead to a group directory"));

    const auto props = managerProperties(f);
    bool junk = false;
    for (const auto& w : props.at("Warnings").get<std::vector<std::string>>()) {
        junk = junk || w.find("junk\\xff") != std::string::npos;
    }
    EXPECT_TRUE(junk);
    auto devices = f.svactl({"devices"});
    EXPECT_EQ(devices.exitCode, 0) << devices.errors;
    EXPECT_NE(devices.output.find("mlx5\\xe2\\x82"), std::string::npos) << devices.output;
    auto vdpa = f.svactl({"vdpa"});
    EXPECT_EQ(vdpa.exitCode, 0) << vdpa.errors;
    EXPECT_NE(vdpa.output.find("vdpa\\xfe0"), std::string::npos) << vdpa.output;
    auto status = f.svactl({"status"});
    EXPECT_EQ(status.exitCode, 0) << status.errors;
    EXPECT_TRUE(f.svad().running()) << f.svad().log();
}

TEST(Input, InvalidUtf8InSysfsAtStartUpIsPublishedEscaped) {
    SvadFixture f(testHost(), {}, {}, {}, spoil);
    expectSpoiledHostReadsBack(f);
}

TEST(Input, InvalidUtf8InSysfsBeforeARescanIsPublishedEscaped) {
    SvadFixture f(testHost());
    spoil(f.sysfs());
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    expectSpoiledHostReadsBack(f);
}

TEST(Input, FifosWhereAttributesBelongDoNotStopStartUpOrARescan) {
    auto fifos = [](const std::string& sys) {
        for (const char* attr :
             {"bus/pci/devices/0000:17:00.0/vendor", "bus/pci/devices/0000:17:00.0/config",
              "bus/dsa/devices/wq0.0/name"}) {
            const fs::path p = real(sys, attr);
            fs::remove(p);
            ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0) << p;
        }
    };
    SvadFixture f(testHost(), {}, {}, {}, fifos);
    const std::string gpu = "/org/svad/Svad1/device/0000_17_00_0";
    auto warnings =
        f.property(gpu, "org.svad.Svad1.Device", "Warnings").get<std::vector<std::string>>();
    auto has = [&warnings](const std::string& needle) {
        return std::any_of(warnings.begin(), warnings.end(), [&needle](const std::string& w) {
            return w.find(needle) != std::string::npos;
        });
    };
    EXPECT_TRUE(has("vendor: a FIFO, not a regular file")) << ::testing::PrintToString(warnings);
    EXPECT_TRUE(has("config: a FIFO, not a regular file")) << ::testing::PrintToString(warnings);
    f.proxy(kRoot)->callMethod("Rescan").onInterface(kManager);
    ping(f);
    EXPECT_TRUE(f.svad().running());
}

// The error a call gets, as name and message.
std::pair<std::string, std::string> errorOf(const std::function<void()>& call) {
    try {
        call();
    } catch (const sdbus::Error& e) {
        return {e.getName(), e.getMessage()};
    }
    return {"<no error>", ""};
}

TEST(Input, AHugeCallerStringIsEchoedShortWithItsLength) {
    SvadFixture f(testHost());
    const std::string huge(1 << 20, 'v');
    auto root = f.proxy(kRoot);
    const auto vm = errorOf([&root, &huge] {
        root->callMethod("AllocateContext")
            .onInterface(kManager)
            .withArguments(huge, std::vector<std::string>{"0000:17:00.0"},
                           std::map<std::string, sdbus::Variant>{});
    });
    EXPECT_EQ(vm.first, "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_LT(vm.second.size(), 512U);
    EXPECT_NE(vm.second.find("(1048576 bytes)"), std::string::npos) << vm.second;

    const auto device = errorOf([&root, &huge] {
        root->callMethod("AllocateContext")
            .onInterface(kManager)
            .withArguments(std::string("vm1"), std::vector<std::string>{huge},
                           std::map<std::string, sdbus::Variant>{});
    });
    EXPECT_EQ(device.first, "org.svad.Svad1.Error.NotFound");
    EXPECT_LT(device.second.size(), 512U);
    EXPECT_NE(device.second.find("(1048576 bytes)"), std::string::npos) << device.second;

    const auto key = errorOf([&root, &huge] {
        std::vector<sdbus::ObjectPath> out;
        root->callMethod("ListDevices")
            .onInterface(kManager)
            .withArguments(std::map<std::string, sdbus::Variant>{{huge, sdbus::Variant(true)}})
            .storeResultsTo(out);
    });
    EXPECT_EQ(key.first, "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_LT(key.second.size(), 512U);
    EXPECT_NE(key.second.find("(1048576 bytes)"), std::string::npos) << key.second;

    // A megabyte of device names: refused, and logged as a short list.
    const auto many = errorOf([&root] {
        root->callMethod("AllocateContext")
            .onInterface(kManager)
            .withArguments(std::string("vm1"),
                           std::vector<std::string>(2000, std::string(500, 'd')),
                           std::map<std::string, sdbus::Variant>{});
    });
    EXPECT_EQ(many.first, "org.svad.Svad1.Error.NotFound");
    EXPECT_LT(many.second.size(), 512U);

    ping(f);
    // The refusals were logged, but not the megabytes.
    EXPECT_LT(f.svad().log().size(), 64U * 1024U);
}

TEST(Input, AnOptionOfTheWrongTypeIsCalledAnOption) {
    SvadFixture f(testHost());
    auto root = f.proxy(kRoot);
    const auto e = errorOf([&root] {
        root->callMethod("AllocateContext")
            .onInterface(kManager)
            .withArguments(std::string("vm1"), std::vector<std::string>{"0000:17:00.0"},
                           std::map<std::string, sdbus::Variant>{
                               {"mode", sdbus::Variant(static_cast<uint32_t>(1))}});
    });
    EXPECT_EQ(e.first, "org.svad.Svad1.Error.InvalidArgument");
    EXPECT_EQ(e.second, "option 'mode' expects type 's', got 'u'");
}

// The configuration at the path is replaced by `make` (a FIFO, a directory, a file).
void replaceConfig(const std::string& path, const std::function<void()>& make) {
    fs::remove_all(path);
    make();
}

TEST(Input, AConfigurationThatIsNoFileOrNoUtf8IsRefusedAtOnceEverywhere) {
    TempDir conf;
    const std::string config = conf.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\ndefault_policy: allow\n";
    SvadFixture f(testHost(), {"--config", config});
    auto root = f.proxy(kRoot);
    auto reload = [&root] {
        const auto started = std::chrono::steady_clock::now();
        auto e = errorOf([&root] { root->callMethod("Reload").onInterface(kManager); });
        EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
        return e;
    };
    auto checkConfig = [&config] {
        return runCommand({"timeout", "10", SVAD_BINARY, "--check-config", config});
    };
    const std::string invalid = "org.svad.Svad1.Error.InvalidArgument";

    replaceConfig(config, [&config] { ASSERT_EQ(::mkfifo(config.c_str(), 0600), 0); });
    auto e = reload();
    EXPECT_EQ(e.first, invalid);
    EXPECT_EQ(e.second, config + ": a FIFO, not a regular file: not a configuration file");
    auto check = checkConfig();
    EXPECT_EQ(check.exitCode, 2);
    EXPECT_NE(check.errors.find("a FIFO, not a regular file"), std::string::npos) << check.errors;
    // SIGHUP reads it too, and svad goes on answering.
    ASSERT_EQ(f.svad().log().find("configuration not reloaded"), std::string::npos);
    f.svad().signal(SIGHUP);
    EXPECT_TRUE(waitUntil(
        [&f] { return f.svad().log().find("configuration not reloaded") != std::string::npos; }));
    ping(f);

    replaceConfig(config, [&config] { fs::create_directory(config); });
    e = reload();
    EXPECT_EQ(e.first, invalid);
    EXPECT_EQ(e.second, config + ": a directory, not a regular file: not a configuration file");
    EXPECT_EQ(checkConfig().exitCode, 2);

    replaceConfig(
        config, [&config] { std::ofstream(config) << "# " << std::string(2U << 20, 'x') << "\n"; });
    e = reload();
    EXPECT_EQ(e.first, invalid);
    EXPECT_NE(e.second.find("larger than 1048576 bytes"), std::string::npos) << e.second;
    EXPECT_EQ(checkConfig().exitCode, 2);

    replaceConfig(config, [&config] {
        std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR
                              << "\ndefault_policy: allow\nrules:\n  - name: r\xff\n";
    });
    e = reload();
    EXPECT_EQ(e.first, invalid);
    EXPECT_EQ(e.second, config + ":4:12: not valid UTF-8 (byte 0xff): keys and strings must be "
                                 "UTF-8");
    EXPECT_EQ(checkConfig().exitCode, 2);

    // The configuration loaded at start-up is still the one in force.
    EXPECT_EQ(f.property(kRoot, kManager, "DefaultPolicy").get<std::string>(), "allow");
    EXPECT_NO_THROW(f.allocate("vm1", {"wq0.0"}));
    EXPECT_TRUE(f.svad().running());
}

} // namespace
} // namespace svad::test
