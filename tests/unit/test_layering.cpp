// The layering of DESIGN.md, checked on the sources: core and ports, the sim and
// the plugins include nothing from the layers above them (the build enforces
// the same with per-target include paths and svad/core/layering_guard.h; the
// compile probes in tests/layering check that).
#include "layering_scan.h"

#include <cstdlib>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdexcept>
#include <string>

namespace svad::layering {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tree under /tmp, removed with everything in it.
class Tree {
public:
    Tree() {
        std::string templ = "/tmp/svad-layering-XXXXXX";
        if (::mkdtemp(templ.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        root_ = templ;
    }
    ~Tree() {
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    Tree(const Tree&) = delete;
    Tree& operator=(const Tree&) = delete;

    void write(const std::string& file, const std::string& text) const {
        fs::create_directories((root_ / file).parent_path());
        std::ofstream(root_ / file) << text;
    }
    const fs::path& root() const { return root_; }

private:
    fs::path root_;
};

TEST(Layering, SourcesKeepToTheirLayers) {
    EXPECT_THAT(violations(SVAD_SOURCE_DIR, svadLayers()), ElementsAre());
}

TEST(Layering, CatchesWhatCoreMustNotInclude) {
    Tree t;
    t.write("svad/core/a.cpp", "#include \"svad/core/model.h\"\n"
                               "#include <string>\n"
                               "#include <sdbus-c++/sdbus-c++.h>\n"
                               "#  include <boost/asio/io_context.hpp>\n"
                               "#include <libudev.h>\n"
                               "#include <systemd/sd-journal.h>\n"
                               "#include \"svad/linux/kernel_linux.h\"\n"
                               "#include \"svad/dbus/service.h\"\n"
                               "#include \"Manager_adaptor.h\"\n");
    t.write("svad/ports/b.h", "#include \"svad/sim/kernel_sim.h\"\n");
    auto v = violations(t.root(), svadLayers());
    ASSERT_EQ(v.size(), 8U) << ::testing::PrintToString(v);
    EXPECT_THAT(v[0], HasSubstr("svad/core/a.cpp:3: <sdbus-c++/sdbus-c++.h> (core"));
    EXPECT_THAT(v[1], HasSubstr(":4: <boost/asio/io_context.hpp>"));
    EXPECT_THAT(v[2], HasSubstr(":5: <libudev.h>"));
    EXPECT_THAT(v[3], HasSubstr(":6: <systemd/sd-journal.h>"));
    EXPECT_THAT(v[4], HasSubstr(":7: <svad/linux/kernel_linux.h>"));
    EXPECT_THAT(v[5], HasSubstr(":8: <svad/dbus/service.h>"));
    EXPECT_THAT(v[6], HasSubstr(":9: <Manager_adaptor.h> (core: must not include generated"));
    EXPECT_THAT(v[7], HasSubstr("svad/ports/b.h:1: <svad/sim/kernel_sim.h>"));
}

// The state store's port shows no SQLite type: only svad/linux/ includes it.
TEST(Layering, CatchesSqliteOutsideTheLinuxBackend) {
    Tree t;
    t.write("svad/ports/state_store.h", "#include <string>\n"
                                        "#include <sqlite3.h>\n");
    t.write("svad/linux/state_sqlite.cpp", "#include <sqlite3.h>\n");
    EXPECT_THAT(violations(t.root(), svadLayers()),
                ElementsAre(HasSubstr("svad/ports/state_store.h:2: <sqlite3.h> (core")));
}

TEST(Layering, CatchesTheSimIncludingTheLinuxBackend) {
    Tree t;
    t.write("svad/sim/x.cpp", "#include \"svad/sim/kernel_sim.h\"\n"
                              "#include \"svad/ports/sysfs_pci.h\"\n"
                              "#include \"svad/linux/driver_binder_linux.h\"\n");
    EXPECT_THAT(violations(t.root(), svadLayers()),
                ElementsAre(HasSubstr("svad/sim/x.cpp:3: <svad/linux/driver_binder_linux.h>")));
}

TEST(Layering, CatchesPluginsIncludingAnythingButTheApi) {
    Tree t;
    t.write("plugins/p/p.cpp", "#include \"plugin_util.h\"\n"
                               "#include <svad/plugin.h>\n"
                               "#include <svad/names.h>\n"
                               "#include <vector>\n"
                               "#include <sys/stat.h>\n"
                               "#include \"svad/core/model.h\"\n"
                               "#include <yaml-cpp/yaml.h>\n"
                               "#include <libudev.h>\n"
                               "#include \"../../svad/core/engine.h\"\n");
    auto v = violations(t.root(), svadLayers());
    ASSERT_EQ(v.size(), 4U) << ::testing::PrintToString(v);
    EXPECT_THAT(v[0], HasSubstr("plugins/p/p.cpp:6: <svad/core/model.h>"));
    EXPECT_THAT(v[1], HasSubstr(":7: <yaml-cpp/yaml.h> (plugins: may include only api/"));
    EXPECT_THAT(v[2], HasSubstr(":8: <libudev.h>"));
    EXPECT_THAT(v[3], HasSubstr(":9: <../../svad/core/engine.h>"));
}

// What the build links: core, the sysfs helpers and the sim reach neither the
// linux backend nor D-Bus, udev, systemd or Asio.
TEST(Layering, LowerLayersLinkNothingAbove) {
    std::ifstream in(SVAD_LAYERING_LINKS);
    ASSERT_TRUE(in) << SVAD_LAYERING_LINKS;
    std::string line;
    int seen = 0;
    while (std::getline(in, line)) {
        ++seen;
        for (const char* bad : {"svad_linux", "svad_service", "svad_dbus_api", "svad_metrics",
                                "svad_plugin_host", "SDBUSCPP", "LIBUDEV", "LIBSYSTEMD", "Boost"}) {
            EXPECT_EQ(line.find(bad), std::string::npos) << line;
        }
    }
    EXPECT_EQ(seen, 3);
}

} // namespace
} // namespace svad::layering
