// Prometheus metrics over HTTP: the real svad serves /metrics on a loopback
// port, and the values follow allocations, PASIDs and releases.
#include "fixture.h"

#include <fstream>
#include <gtest/gtest.h>
#include <stdexcept>
#include <sys/wait.h>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";

using Options = std::map<std::string, sdbus::Variant>;

TEST(Metrics, ScrapedOverHttpAndFollowAllocations) {
    const uint16_t port = freePort();
    SvadFixture f(testHost(), {"--metrics-address", "127.0.0.1:" + std::to_string(port)});
    std::string m = httpGet(port);

    // The host as discovered, and what svad is.
    EXPECT_NE(m.find("# HELP svad_devices "), std::string::npos) << m;
    EXPECT_NE(m.find("# TYPE svad_hotplug_refreshes_total counter"), std::string::npos) << m;
    EXPECT_NE(m.find("svad_build_info{backend=\"sim\",version=\""), std::string::npos) << m;
    EXPECT_EQ(metricValue(m, "svad_pasid_capable_devices"), 2) << m;
    EXPECT_EQ(metricValue(m, "svad_devices{driver=\"vfio-pci\",kind=\"pci\"}"), 3) << m;
    EXPECT_EQ(metricValue(m, "svad_devices{driver=\"vhost_vdpa\",kind=\"vdpa\"}"), 2) << m;
    EXPECT_EQ(metricValue(m, "svad_iommu_groups{viable=\"false\"}"), 5) << m;
    EXPECT_EQ(metricValue(m, "svad_iommu_groups{viable=\"true\"}"), 2) << m;
    EXPECT_EQ(metricValue(m, "svad_pasids_allocated"), 0) << m;
    EXPECT_EQ(metricValue(m, "svad_contexts{mode=\"handoff\",plugin=\"vfio\"}"), -1) << m;

    // An allocation, a refusal (the device is held), a PASID, a release.
    auto ctx = f.allocate("vm1", {"0000:3b:10.0", "wq0.0"});
    EXPECT_THROW(f.allocate("vm2", {"0000:3b:10.0"}), sdbus::Error);
    uint32_t pasid = 0;
    f.proxy(kRoot)
        ->callMethod("AllocatePasid")
        .onInterface(kManager)
        .withArguments(ctx, std::string("wq0.0"), Options{})
        .storeResultsTo(pasid);
    m = httpGet(port);
    // The plugins that prepared the devices label the allocation; a refusal before any
    // plugin was asked (the device is held) is "none".
    EXPECT_EQ(metricValue(m, "svad_allocations_total{plugin=\"idxd,vfio\",result=\"ok\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_allocations_total{plugin=\"none\",result=\"Busy\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_allocation_duration_seconds_count{plugin=\"idxd,vfio\"}"), 1)
        << m;
    EXPECT_EQ(metricValue(m, "svad_contexts{mode=\"handoff\",plugin=\"vfio\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_contexts{mode=\"handoff\",plugin=\"idxd\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_pasids_allocated"), 1) << m;

    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(ctx);
    m = httpGet(port);
    EXPECT_EQ(metricValue(m, "svad_releases_total{reason=\"owner\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_contexts{mode=\"handoff\",plugin=\"vfio\"}"), -1) << m;
    EXPECT_EQ(metricValue(m, "svad_pasids_allocated"), 0) << m;
    EXPECT_EQ(metricValue(m, "svad_fault_queues_open"), 0) << m;

    // A refusal by policy is counted under the plugin that denied: vfio, for a VF once
    // the configuration says allow_vfs: false.
    std::ofstream(f.root() + "/svad.yaml", std::ios::app)
        << "plugins:\n  vfio: {allow_vfs: false}\n";
    f.proxy(kRoot)->callMethod("Reload").onInterface(kManager);
    EXPECT_THROW(f.allocate("vm1", {"0000:3b:10.0"}), sdbus::Error);
    m = httpGet(port);
    EXPECT_EQ(metricValue(m, "svad_policy_denials_total{plugin=\"vfio\"}"), 1) << m;
    EXPECT_EQ(metricValue(m, "svad_allocations_total{plugin=\"vfio\",result=\"PolicyDenied\"}"), 1)
        << m;
}

// "--metrics-address off" wins over the configuration's address: the port the
// configuration names stays closed, and svad says nothing is served.
TEST(Metrics, OffServesNothing) {
    const uint16_t port = freePort();
    TempDir conf;
    const std::string config = conf.path() + "/svad.yaml";
    std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                          << "default_policy: allow\n"
                          << "metrics: {address: \"127.0.0.1:" << port << "\"}\n";
    {
        // The same configuration alone serves that port: the probe can see it.
        SvadFixture served(testHost(), {"--config", config, "--metrics-address",
                                        "127.0.0.1:" + std::to_string(port)});
        EXPECT_NO_THROW(httpGet(port));
    }
    SvadFixture f(testHost(), {"--config", config, "--metrics-address", "off"});
    EXPECT_THROW(httpGet(port), std::runtime_error);
    EXPECT_EQ(f.svad().log().find("metrics served"), std::string::npos) << f.svad().log();
}

TEST(Metrics, BadAddressIsAUsageError) {
    for (const std::string bad : {"127.0.0.1", "127.0.0.1:99999", ":9464", "::1:9464", "a:b"}) {
        auto r =
            runCommand({SVAD_BINARY, "--bus", "unix:path=/nonexistent", "--metrics-address", bad});
        EXPECT_EQ(r.exitCode, 2) << bad;
        EXPECT_NE(r.errors.find("--metrics-address"), std::string::npos) << r.errors;
    }
}

// --check-config and the start of svad judge an address alike (one check in
// core): `::1:9464` passed the check and then stopped svad at start.
TEST(Metrics, CheckConfigAndStartAgreeOnTheAddress) {
    TempDir conf;
    const std::string v6 = conf.path() + "/v6.yaml";
    std::ofstream(v6) << "metrics: {address: \"::1:9464\"}\n";
    const std::string why = "'::1:9464': write an IPv6 host in brackets, as [::1]:9464";
    auto r = runCommand({SVAD_BINARY, "--check-config", v6});
    EXPECT_EQ(r.exitCode, 2) << r.output;
    EXPECT_NE(r.errors.find("metrics.address: " + why), std::string::npos) << r.errors;
    r = runCommand(
        {SVAD_BINARY, "--bus", "unix:path=/nonexistent", "--metrics-address", "::1:9464"});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_NE(r.errors.find("--metrics-address: " + why), std::string::npos) << r.errors;
    for (const std::string good : {"127.0.0.1:0", "off"}) {
        const std::string file = conf.path() + "/good.yaml";
        std::ofstream(file) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                            << "metrics: {address: \"" << good << "\"}\n";
        r = runCommand({SVAD_BINARY, "--check-config", file});
        EXPECT_EQ(r.exitCode, 0) << good << ": " << r.errors;
    }
    // [::1] is well formed and served (svad's endpoint binds IPv6 itself): the
    // check passes, and the start gets past the address to the missing bus.
    const std::string bracketed = conf.path() + "/bracketed.yaml";
    std::ofstream(bracketed) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                             << "metrics: {address: \"[::1]:0\"}\n";
    auto check = runCommand({SVAD_BINARY, "--check-config", bracketed});
    auto start = runCommand(
        {SVAD_BINARY, "--bus", "unix:path=/nonexistent", "--metrics-address", "[::1]:0"});
    EXPECT_EQ(check.exitCode, 0) << check.errors;
    EXPECT_NE(start.exitCode, 0); // no bus there
    EXPECT_NE(start.exitCode, 2) << start.errors;
}

TEST(Metrics, PortTakenIsAClearError) {
    const uint16_t port = freePort();
    SvadFixture first(testHost(), {"--metrics-address", "127.0.0.1:" + std::to_string(port)});
    TempDir dir;
    hostgen::writeTree(testHost(), dir.path() + "/host");
    auto r = runCommand({SVAD_BINARY, "--bus", first.bus(), "--backend", "sim", "--sysfs-root",
                         dir.path() + "/host/sys", "--dev-root", dir.path() + "/host/dev",
                         "--metrics-address", "127.0.0.1:" + std::to_string(port)});
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.errors.find("svad: metrics: cannot serve metrics on 127.0.0.1:"), std::string::npos)
        << r.errors;
}

} // namespace
} // namespace svad::test
