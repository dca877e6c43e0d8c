#include "svad/core/config.h"
#include "svad/linux/config_file.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace svad::core {
namespace {

using linux_impl::loadConfig;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

ConfigLoad parse(const std::string& text) {
    return parseConfig(text, "t.yaml", "/plugins");
}

// The errors of a text that must not load.
std::vector<std::string> errorsOf(const std::string& text) {
    ConfigLoad load = parse(text);
    EXPECT_EQ(load.config, nullptr) << text;
    return load.errors;
}

// The config of a text that must load.
std::shared_ptr<const Config> load(const std::string& text) {
    ConfigLoad l = parse(text);
    EXPECT_THAT(l.errors, ElementsAre()) << text;
    EXPECT_NE(l.config, nullptr) << text;
    return l.config;
}

// A directory under /tmp, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string templ = "/tmp/svad-config-test-XXXXXX";
        if (::mkdtemp(templ.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = templ;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string write(const std::string& name, const std::string& text) const {
        std::string file = path_ + "/" + name;
        std::ofstream out(file);
        out << text;
        return file;
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// --- validation: every error with file:line:column ---------------------------

struct ErrorCase {
    const char* yaml;
    const char* error;
};

void expectSingleErrors(const std::vector<ErrorCase>& cases) {
    for (const auto& c : cases) {
        SCOPED_TRACE(c.yaml);
        EXPECT_THAT(errorsOf(c.yaml), ElementsAre(c.error));
    }
}

TEST(Config, StateDirIsReadAndOptional) {
    EXPECT_EQ(load("state_dir: /srv/svad-state\n")->stateDir, "/srv/svad-state");
    EXPECT_FALSE(load("default_policy: deny\n")->stateDir.has_value());
}

TEST(ConfigErrors, UnknownTopLevelKeyNamesTheKnownOnes) {
    auto errors = errorsOf("backend: linux\nplugin_directory: /x\n");
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_THAT(errors[0], StartsWith("t.yaml:2:1: unknown key 'plugin_directory' in the top "
                                      "level (expected one of: backend, "));
    EXPECT_THAT(errors[0], HasSubstr(" plugin_dir, "));
    EXPECT_THAT(errors[0], HasSubstr(" rules)"));
}

TEST(ConfigErrors, UnknownKeysInsideARulePointAtTheKey) {
    auto errors = errorsOf(R"(rules:
  - name: a
    match:
      device: x
      bogus: 1
    allow:
      users: [0]
    limits:
      mode: any
      speed: 3
    colour: red
)");
    EXPECT_THAT(errors,
                ElementsAre("t.yaml:11:5: unknown key 'colour' in a rule (expected one of: name, "
                            "action, match, allow, limits)",
                            "t.yaml:5:7: unknown key 'bogus' in rule 'a' match (expected one of: "
                            "device, vendor_device, class, kind, iommu_group, tag)",
                            "t.yaml:7:7: unknown key 'users' in rule 'a' allow (expected one of: "
                            "vms, uids, groups)",
                            "t.yaml:10:7: unknown key 'speed' in rule 'a' limits (expected one of: "
                            "pasid_quota, max_contexts, mode, auto_bind, shared_limit)"));
}

TEST(ConfigErrors, WrongTypesAndRanges) {
    expectSingleErrors({
        {"default_policy: maybe\n", "t.yaml:1:17: default_policy: expected one of deny, allow"},
        {"backend: qemu\n", "t.yaml:1:10: backend: expected one of linux, sim"},
        {"pasid:\n  default_quota: -1\n",
         "t.yaml:2:18: pasid.default_quota: expected a whole number from 0 to 1048576"},
        {"pasid:\n  default_quota: \"lots\"\n",
         "t.yaml:2:18: pasid.default_quota: expected a whole number from 0 to 1048576"},
        {"pasid:\n  default_quota: 2000000\n",
         "t.yaml:2:18: pasid.default_quota: expected a whole number from 0 to 1048576"},
        {"pasid:\n  quotas:\n    web-1: many\n",
         "t.yaml:3:12: pasid.quotas.web-1: expected a whole number from 0 to 1048576"},
        {"pasid: 5\n", "t.yaml:1:8: pasid: expected a mapping with default_quota and quotas"},
        {"sysfs_root: sys\n", "t.yaml:1:13: sysfs_root: expected an absolute path, not 'sys'"},
        {"dev_root: \"\"\n", "t.yaml:1:11: dev_root: expected a non-empty string"},
        {"state_dir: var/lib/svad\n",
         "t.yaml:1:12: state_dir: expected an absolute path, not 'var/lib/svad'"},
        {"plugin_dir: [/a]\n", "t.yaml:1:13: plugin_dir: expected a non-empty string"},
        {"metrics:\n  address: garbage\n", "t.yaml:2:12: metrics.address: 'garbage': no port; "
                                           "expected IPV4:PORT, [IPV6]:PORT or off"},
        {"metrics:\n  address: \":9464\"\n",
         "t.yaml:2:12: metrics.address: ':9464': no host; expected IPV4:PORT, [IPV6]:PORT or off"},
        {"metrics:\n  address: 127.0.0.1:65536\n",
         "t.yaml:2:12: metrics.address: '127.0.0.1:65536': port '65536' is not 0-65535"},
        {"metrics: off\n", "t.yaml:1:10: metrics: expected a mapping with 'address'"},
        {"tags: [a]\n", "t.yaml:1:7: tags: expected a mapping of tag name to device ids or globs"},
        {"tags:\n  gpus: {a: b}\n",
         "t.yaml:2:9: tags.gpus: expected a string or a list of strings"},
        {"rules: {a: b}\n", "t.yaml:1:8: rules: expected a list of rules"},
        {"rules:\n  - allow\n",
         "t.yaml:2:5: rule: expected a mapping with name, match, allow and limits"},
    });
}

TEST(ConfigErrors, MetricsAddressAcceptsHostPortAndOff) {
    for (const char* address : {"127.0.0.1:9464", "127.0.0.1:0", "[::1]:9464", "off"}) {
        SCOPED_TRACE(address);
        auto c = load(std::string("metrics:\n  address: \"") + address + "\"\n");
        ASSERT_NE(c, nullptr);
        EXPECT_EQ(c->metricsAddress, address);
    }
}

std::string oneRule(const std::string& match) {
    return "rules:\n  - name: a\n    match:\n      " + match + "\n";
}

TEST(ConfigErrors, VendorDevice) {
    for (const char* good : {"\"8086:0b25\"", "\"8086:*\"", "\"10DE:2330\""}) {
        SCOPED_TRACE(good);
        load(oneRule(std::string("vendor_device: ") + good));
    }
    auto c = load(oneRule("vendor_device: \"8086:0b25\""));
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->rules[0].match.vendor, 0x8086);
    EXPECT_EQ(c->rules[0].match.device, 0x0b25);
    c = load(oneRule("vendor_device: \"8086:*\""));
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->rules[0].match.vendor, 0x8086);
    EXPECT_EQ(c->rules[0].match.device, std::nullopt);

    for (const char* bad : {"8086", "xyz:0b25", "8086:12345", "8086:", ":0b25", "*:0b25"}) {
        SCOPED_TRACE(bad);
        EXPECT_THAT(errorsOf(oneRule(std::string("vendor_device: \"") + bad + "\"")),
                    ElementsAre(std::string("t.yaml:4:22: rule 'a' match.vendor_device: expected "
                                            "VVVV:DDDD in hex (DDDD may be *), not '") +
                                bad + "'"));
    }
    EXPECT_THAT(errorsOf(oneRule("vendor_device: [8086]")),
                ElementsAre("t.yaml:4:22: rule 'a' match.vendor_device: expected VVVV:DDDD in "
                            "hex (DDDD may be *)"));
}

TEST(ConfigErrors, ClassCode) {
    struct Good {
        const char* text;
        uint32_t value;
        uint32_t shift;
    };
    for (const Good& g :
         {Good{"0x08", 0x08, 16}, Good{"0x0880", 0x0880, 8}, Good{"0x088000", 0x088000, 0}}) {
        SCOPED_TRACE(g.text);
        auto c = load(oneRule(std::string("class: ") + g.text));
        ASSERT_NE(c, nullptr);
        EXPECT_EQ(c->rules[0].match.classValue, g.value);
        EXPECT_EQ(c->rules[0].match.classShift, g.shift);
    }
    for (const char* bad : {"0x088", "0xZZ", "0x", "0x08800000", "[8]"}) {
        SCOPED_TRACE(bad);
        EXPECT_THAT(errorsOf(oneRule(std::string("class: ") + bad)),
                    ElementsAre("t.yaml:4:14: rule 'a' match.class: expected a class in hex: 2, "
                                "4 or 6 digits (0x08, 0x0880, 0x088000)"));
    }
}

TEST(ConfigErrors, RuleFields) {
    expectSingleErrors({
        {"rules:\n  - name: a\n    action: maybe\n    match: {kind: pci}\n",
         "t.yaml:3:13: rule 'a' action: expected one of allow, deny"},
        {"rules:\n  - name: a\n    match:\n      kind: gpu\n",
         "t.yaml:4:13: rule 'a' match.kind: expected one of pci, vdpa, queue"},
        {"rules:\n  - name: a\n    match:\n      iommu_group: -3\n",
         "t.yaml:4:20: rule 'a' match.iommu_group: expected a whole number from 0 to 4294967295"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      mode: fast\n",
         "t.yaml:5:13: rule 'a' limits.mode: expected one of any, handoff, attached"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      auto_bind: maybe\n",
         "t.yaml:5:18: rule 'a' limits.auto_bind: expected true or false"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      auto_bind: 1\n",
         "t.yaml:5:18: rule 'a' limits.auto_bind: expected true or false"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      max_contexts: 0\n",
         "t.yaml:5:21: rule 'a' limits.max_contexts: expected a whole number from 1 to 1048576"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      shared_limit: 0\n",
         "t.yaml:5:21: rule 'a' limits.shared_limit: expected a whole number from 1 to 1048576"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    limits:\n      pasid_quota: 1048577\n",
         "t.yaml:5:20: rule 'a' limits.pasid_quota: expected a whole number from 0 to 1048576"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    allow:\n      uids: [root]\n",
         "t.yaml:5:14: rule 'a' allow.uids item: expected a whole number from 0 to 4294967294"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    allow: everyone\n",
         "t.yaml:4:12: rule 'a' allow: expected a mapping with vms, uids and groups"},
    });
}

TEST(ConfigErrors, RuleNameAndMatchAreRequired) {
    expectSingleErrors({
        {"rules:\n  - match: {kind: pci}\n", "t.yaml:2:5: rule: 'name' is required"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n  - name: a\n    match: {kind: vdpa}\n",
         "t.yaml:4:11: rule name 'a' is used twice"},
        {"rules:\n  - name: a\n    action: deny\n",
         "t.yaml:2:5: rule 'a': 'match' is required (use device: \"*\" for every device)"},
        {"rules:\n  - name: a\n    match: {}\n",
         "t.yaml:3:12: rule 'a' match: expected at least one of device, vendor_device, class, "
         "kind, iommu_group, tag"},
        {"rules:\n  - name: a\n    match: [kind]\n",
         "t.yaml:3:12: rule 'a' match: expected a mapping"},
    });
}

TEST(ConfigErrors, TagMustBeDefined) {
    EXPECT_THAT(errorsOf("tags:\n  gpus: \"0000:4d:00.0\"\nrules:\n  - name: a\n    match:\n"
                         "      tag: [gpus, nics]\n"),
                ElementsAre("t.yaml:6:12: rule 'a' match.tag: no tag 'nics' under tags"));
    // The tags section may come after the rules.
    load("rules:\n  - name: a\n    match: {tag: gpus}\ntags:\n  gpus: \"0000:4d:00.0\"\n");
}

TEST(ConfigErrors, NumbersListsKeysAndGroupIdsAreStrict) {
    // One uid or group may stand alone, without a list.
    auto one = parseConfig(
        "rules:\n  - name: a\n    match: {kind: queue}\n    allow: {uids: 7, groups: \"100\"}\n",
        "t.yaml", "/p");
    ASSERT_TRUE(one.errors.empty()) << one.errors.front();
    EXPECT_EQ(one.config->rules[0].who.uids, std::vector<uid_t>{7});
    EXPECT_EQ(one.config->rules[0].who.gids, std::vector<gid_t>{100});
    // A leading zero is decimal, not octal; 0x is hex.
    auto dec = parseConfig("pasid: {default_quota: 010}\n", "t.yaml", "/p");
    ASSERT_TRUE(dec.errors.empty());
    EXPECT_EQ(dec.config->defaultPasidQuota, 10U);
    auto hex = parseConfig("pasid: {default_quota: 0x10}\n", "t.yaml", "/p");
    ASSERT_TRUE(hex.errors.empty());
    EXPECT_EQ(hex.config->defaultPasidQuota, 16U);
    EXPECT_THAT(errorsOf("admin_group: \"4294967296\"\n"),
                ElementsAre("t.yaml:1:14: admin_group: group id 4294967296 is out of range"));
    EXPECT_THAT(errorsOf("admin_group: \"99999999999999999999\"\n"),
                ElementsAre("t.yaml:1:14: admin_group: group id 99999999999999999999 is out of "
                            "range"));
    // An empty list would match everything: refused.
    EXPECT_THAT(errorsOf("rules:\n  - name: a\n    match: {device: []}\n"),
                ElementsAre("t.yaml:3:21: rule 'a' match.device: expected at least one entry (an "
                            "empty list would match anything)"));
    EXPECT_THAT(errorsOf("rules:\n  - name: a\n    match: {kind: pci}\n    allow: {uids: []}\n"),
                ElementsAre("t.yaml:4:19: rule 'a' allow.uids: an empty list would let anyone in: "
                            "remove the key instead"));
    // A key given twice is an error, not a silent override.
    EXPECT_THAT(errorsOf("default_policy: allow\ndefault_policy: deny\n"),
                ElementsAre("t.yaml:2:1: key 'default_policy' appears twice in the top level"));
}

TEST(ConfigErrors, UnixGroupsMustExist) {
    expectSingleErrors({
        {"admin_group: no-such-group-svad-test\n",
         "t.yaml:1:14: admin_group: no unix group named 'no-such-group-svad-test' on this host"},
        {"rules:\n  - name: a\n    match: {kind: pci}\n    allow:\n"
         "      groups: [\"100\", no-such-group-svad-test]\n",
         "t.yaml:5:23: rule 'a' allow.groups item: no unix group named "
         "'no-such-group-svad-test' on this host"},
    });
}

TEST(ConfigErrors, YamlSyntaxErrorHasLineAndColumn) {
    auto errors = errorsOf("default_policy: deny\nrules: [a, b\n");
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_THAT(errors[0], ::testing::MatchesRegex("t\\.yaml:[0-9]+:[0-9]+: .+"));
    EXPECT_THAT(errors[0], StartsWith("t.yaml:3:1: "));
    EXPECT_THAT(errors[0], HasSubstr("end of sequence flow not found"));
}

TEST(ConfigErrors, TopLevelMustBeAMapping) {
    EXPECT_THAT(errorsOf("- backend\n- rules\n"),
                ElementsAre("t.yaml:1:1: expected a mapping of settings at the top level"));
    EXPECT_THAT(errorsOf("just text\n"),
                ElementsAre("t.yaml:1:1: expected a mapping of settings at the top level"));
}

TEST(ConfigErrors, PluginSections) {
    EXPECT_THAT(errorsOf("plugins:\n  idxd: 5\n  vfio:\n    allow_vfs: [true]\n"),
                ElementsAre("t.yaml:2:9: plugins.idxd: expected a mapping of settings",
                            "t.yaml:4:16: plugins.vfio.allow_vfs: expected a single value"));
    EXPECT_THAT(errorsOf("plugins: [idxd]\n"),
                ElementsAre("t.yaml:1:10: plugins: expected a mapping of plugin name to its "
                            "settings"));
    // Keys inside a plugin's section are the plugin's to check; an empty section is fine.
    auto c = load("plugins:\n  idxd:\n    shared_limit: 4\n    anything: goes\n  vdpa:\n");
    ASSERT_NE(c, nullptr);
    using Options = std::vector<std::pair<std::string, std::string>>;
    EXPECT_EQ(c->pluginOptions.at("idxd"), (Options{{"shared_limit", "4"}, {"anything", "goes"}}));
    EXPECT_EQ(c->pluginOptions.at("vdpa"), Options{});
}

TEST(ConfigErrors, EveryErrorIsReported) {
    ConfigLoad l = parse(R"(sysfs_root: sys
default_policy: maybe
pasid:
  default_quota: lots
rules:
  - name: a
    match:
      kind: gpu
)");
    EXPECT_EQ(l.config, nullptr);
    EXPECT_THAT(l.errors,
                ElementsAre("t.yaml:1:13: sysfs_root: expected an absolute path, not 'sys'",
                            "t.yaml:2:17: default_policy: expected one of deny, allow",
                            "t.yaml:4:18: pasid.default_quota: expected a whole number from 0 to "
                            "1048576",
                            "t.yaml:8:13: rule 'a' match.kind: expected one of pci, vdpa, queue"));
}

// --- defaults and the shipped files -----------------------------------------

void expectDefaults(const Config& c) {
    EXPECT_EQ(c.defaultPolicy, RuleAction::Deny);
    EXPECT_EQ(c.defaultPasidQuota, 256U);
    EXPECT_EQ(c.metricsAddress, "127.0.0.1:9464");
    EXPECT_EQ(c.pluginDir, "/plugins");
    EXPECT_EQ(c.backend, std::nullopt);
    EXPECT_EQ(c.sysfsRoot, std::nullopt);
    EXPECT_EQ(c.devRoot, std::nullopt);
    EXPECT_EQ(c.adminGid, std::nullopt);
    EXPECT_TRUE(c.adminGroup.empty());
    EXPECT_TRUE(c.rules.empty());
    EXPECT_TRUE(c.tags.empty());
    EXPECT_TRUE(c.pasidQuotas.empty());
}

TEST(ConfigDefaults, EmptyFileAndCommentsOnly) {
    for (const char* text : {"", "\n", "# nothing here\n\n   # still nothing\n"}) {
        SCOPED_TRACE(text);
        auto c = load(text);
        ASSERT_NE(c, nullptr);
        expectDefaults(*c);
        EXPECT_EQ(c->path, "t.yaml");
    }
    auto d = defaultConfig("/plugins");
    ASSERT_NE(d, nullptr);
    expectDefaults(*d);
}

TEST(ConfigDefaults, ValuesAreRead) {
    auto c = load(R"(backend: sim
sysfs_root: /s
dev_root: /d
plugin_dir: /pl
metrics:
  address: off
default_policy: allow
pasid:
  default_quota: 0x100
)");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->backend, "sim");
    EXPECT_EQ(c->sysfsRoot, "/s");
    EXPECT_EQ(c->devRoot, "/d");
    EXPECT_EQ(c->pluginDir, "/pl");
    EXPECT_EQ(c->metricsAddress, "off");
    EXPECT_EQ(c->defaultPolicy, RuleAction::Allow);
    EXPECT_EQ(c->defaultPasidQuota, 256U);
}

Requester who(std::string vm, uid_t uid, std::vector<gid_t> gids = {}) {
    Requester r;
    r.vm = std::move(vm);
    r.uid = uid;
    r.gids = std::move(gids);
    return r;
}
// A device without PCI ids (a work queue by name only, or vdpa_sim's vDPA device).
DeviceFacts bare(std::string id, DeviceKind kind) {
    DeviceFacts d;
    d.id = std::move(id);
    d.kind = kind;
    return d;
}
DeviceFacts vdpaSim(std::string id) {
    return bare(std::move(id), DeviceKind::Vdpa);
}

TEST(ConfigFiles, ShippedDefaultIsValid) {
    ConfigLoad l = loadConfig(SVAD_SOURCE_DIR "/config/svad.yaml", "/p");
    EXPECT_THAT(l.errors, ElementsAre());
    ASSERT_NE(l.config, nullptr);
    EXPECT_EQ(l.config->defaultPolicy, RuleAction::Deny);
    EXPECT_EQ(l.config->defaultPasidQuota, 256U);
    EXPECT_EQ(l.config->pluginDir, "/p");
    EXPECT_TRUE(l.config->rules.empty());
}

TEST(ConfigFiles, ShippedExampleIsValid) {
    ConfigLoad l = loadConfig(SVAD_SOURCE_DIR "/config/examples/one-vm-dsa-and-vfio.yaml", "/p");
    EXPECT_THAT(l.errors, ElementsAre());
    ASSERT_NE(l.config, nullptr);
    const Config& c = *l.config;
    ASSERT_EQ(c.rules.size(), 2U);
    EXPECT_EQ(c.rules[0].name, "web-1-dsa-queue");
    EXPECT_EQ(c.rules[1].name, "web-1-gpu");
    EXPECT_TRUE(c.rules[1].limits.autoBind);

    const DeviceFacts wq = bare("wq0.0", DeviceKind::Queue);
    const DeviceFacts gpu = bare("0000:4d:00.0", DeviceKind::Pci);
    EXPECT_EQ(c.decide(wq, who("web-1", 0)).rule, &c.rules[0]);
    EXPECT_EQ(c.decide(gpu, who("web-1", 0)).rule, &c.rules[1]);
    EXPECT_FALSE(c.decide(gpu, who("web-1", 1000)).allowed);
    EXPECT_FALSE(c.decide(gpu, who("web-2", 0)).allowed);
}

TEST(ConfigFiles, LoadConfigNamesTheFileInErrors) {
    TempDir dir;
    const std::string good = dir.write("good.yaml", "default_policy: allow\n");
    ConfigLoad l = loadConfig(good, "/p");
    EXPECT_THAT(l.errors, ElementsAre());
    ASSERT_NE(l.config, nullptr);
    EXPECT_EQ(l.config->path, good);
    EXPECT_EQ(l.config->defaultPolicy, RuleAction::Allow);

    const std::string bad = dir.write("bad.yaml", "# a comment\ndefault_policy: maybe\n");
    l = loadConfig(bad, "/p");
    EXPECT_EQ(l.config, nullptr);
    EXPECT_THAT(l.errors, ElementsAre(bad + ":2:17: default_policy: expected one of deny, allow"));

    const std::string missing = dir.path() + "/missing.yaml";
    l = loadConfig(missing, "/p");
    EXPECT_EQ(l.config, nullptr);
    EXPECT_THAT(l.errors, ElementsAre(missing + ": cannot read: No such file or directory"));
}

TEST(ConfigFiles, OnlyARegularFileOfBoundedSizeIsRead) {
    TempDir dir;
    const std::string fifo = dir.path() + "/fifo.yaml";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    // No writer: the load answers at once instead of waiting for one.
    EXPECT_THAT(loadConfig(fifo, "/p").errors,
                ElementsAre(fifo + ": a FIFO, not a regular file: not a configuration file"));
    const std::string sub = dir.path() + "/conf.d";
    std::filesystem::create_directory(sub);
    ConfigLoad l = loadConfig(sub, "/p");
    EXPECT_EQ(l.config, nullptr);
    EXPECT_THAT(l.errors,
                ElementsAre(sub + ": a directory, not a regular file: not a configuration file"));

    const std::string huge =
        dir.write("huge.yaml", "# " + std::string(kMaxConfigBytes, 'x') + "\n");
    l = loadConfig(huge, "/p");
    EXPECT_EQ(l.config, nullptr);
    EXPECT_THAT(l.errors, ElementsAre(huge + ": larger than 1048576 bytes (1 MiB), the most a "
                                             "configuration file may hold"));
    // Just under the limit is fine.
    const std::string big =
        dir.write("big.yaml", "# " + std::string(kMaxConfigBytes - 4, 'x') + "\n");
    EXPECT_THAT(loadConfig(big, "/p").errors, ElementsAre());
}

TEST(ConfigFiles, KeysAndStringsMustBeUtf8) {
    // A raw byte: the error points at it.
    EXPECT_THAT(errorsOf("default_policy: allow\nadmin_group: wh\xff"
                         "eel\n"),
                ElementsAre("t.yaml:2:16: not valid UTF-8 (byte 0xff): keys and strings must be "
                            "UTF-8"));
    EXPECT_THAT(errorsOf("rules:\n  - name: caf\xc3\n    action: allow\n"),
                ElementsAre(HasSubstr("t.yaml:2:14: not valid UTF-8 (byte 0xc3)")));
    EXPECT_THAT(errorsOf("ad\xed\xa0\x80min_group: x\n"),
                ElementsAre(HasSubstr("t.yaml:1:3: not valid UTF-8 (byte 0xed)")));
    // An escape in a quoted string that makes a character no D-Bus string may hold.
    EXPECT_THAT(errorsOf("admin_group: \"wheel\\0\"\n"),
                ElementsAre(StartsWith("t.yaml:1:14: 'wheel\\x00' is not valid UTF-8")));
    EXPECT_THAT(errorsOf("rules:\n  - name: \"r\\uFFFF\"\n    action: allow\n"),
                ElementsAre(StartsWith("t.yaml:2:11: 'r\\xef\\xbf\\xbf' is not valid UTF-8")));
    // Valid multibyte text is fine.
    EXPECT_THAT(parse("rules:\n  - name: caf\xc3\xa9\n    match: {kind: pci}\n").errors,
                ElementsAre());
}

TEST(ConfigFiles, SameVerdictForAFileAndItsText) {
    TempDir dir;
    const std::string bad = dir.write("bad.yaml", "admin_group: \xff\n");
    EXPECT_THAT(loadConfig(bad, "/p").errors,
                ElementsAre(bad + ":1:14: not valid UTF-8 (byte 0xff): keys and strings must be "
                                  "UTF-8"));
    EXPECT_THAT(parseConfig(std::string(kMaxConfigBytes + 1, '#'), "t.yaml", "/p").errors,
                ElementsAre(HasSubstr("larger than 1048576 bytes")));
}

// --- rule matching ------------------------------------------------------------

DeviceFacts pci(std::string id, uint16_t vendor, uint16_t device, uint32_t cls, uint32_t group) {
    return {.id = std::move(id),
            .kind = DeviceKind::Pci,
            .vendor = vendor,
            .device = device,
            .classCode = cls,
            .group = group};
}
DeviceFacts queue(std::string id) { // on a DSA at 0000:6a:01.0
    return {.id = std::move(id),
            .kind = DeviceKind::Queue,
            .vendor = 0x8086,
            .device = 0x0b25,
            .classCode = 0x088000,
            .group = 40};
}

const DeviceFacts kDsa = pci("0000:6a:01.0", 0x8086, 0x0b25, 0x088000, 40);
const DeviceFacts kIaa = pci("0000:6a:02.0", 0x8086, 0x0cfe, 0x088000, 41);
const DeviceFacts kGpu = pci("0000:4d:00.0", 0x10de, 0x2330, 0x030200, 30);
const DeviceFacts kNic = pci("0000:38:00.0", 0x8086, 0x1593, 0x020000, 12);
const DeviceFacts kOddClass = pci("0000:6b:00.0", 0x8086, 0x0b25, 0x088100, 42);

struct MatchCase {
    const char* rule; // the rule's keys after its name, one per line
    DeviceFacts device;
    Requester requester;
    bool expected;
};

// One rule under a fixed tags section; each line of `rule` is indented under "- name: r".
std::string ruleConfig(const std::string& rule) {
    std::string text = "tags:\n"
                       "  gpus: [\"0000:4d:00.0\", \"0000:4e:00.*\"]\n"
                       "  big-bar: [\"0000:4d:00.0\", \"0000:38:00.0\"]\n"
                       "rules:\n"
                       "  - name: r\n";
    std::string line;
    for (char ch : rule) {
        if (ch == '\n') {
            text += "    " + line + "\n";
            line.clear();
        } else {
            line += ch;
        }
    }
    if (!line.empty()) {
        text += "    " + line + "\n";
    }
    return text;
}

TEST(RuleMatch, Table) {
    const Requester anyone = who("vm", 1000);
    const std::vector<MatchCase> cases = {
        // device ids and globs
        {"match: {device: \"wq*.0\"}", queue("wq0.0"), anyone, true},
        {"match: {device: \"wq*.0\"}", queue("wq12.0"), anyone, true},
        {"match: {device: \"wq*.0\"}", queue("wq0.1"), anyone, false},
        {"match: {device: \"0000:6a:*\"}", kDsa, anyone, true},
        {"match: {device: \"0000:6a:*\"}", kIaa, anyone, true},
        {"match: {device: \"0000:6a:*\"}", kGpu, anyone, false},
        {"match: {device: \"0000:6a:01.0\"}", kIaa, anyone, false},
        {"match: {device: [\"0000:38:00.0\", \"0000:4d:00.0\"]}", kGpu, anyone, true},
        {"match: {device: [\"0000:38:00.0\", \"0000:4d:00.0\"]}", kDsa, anyone, false},
        // vendor_device
        {"match: {vendor_device: \"8086:0b25\"}", kDsa, anyone, true},
        {"match: {vendor_device: \"8086:0b25\"}", queue("wq1.0"), anyone, true},
        {"match: {vendor_device: \"8086:0b25\"}", kIaa, anyone, false},
        {"match: {vendor_device: \"8086:0b25\"}", vdpaSim("vdpa0"), anyone, false},
        {"match: {vendor_device: \"8086:*\"}", kIaa, anyone, true},
        {"match: {vendor_device: \"8086:*\"}", kNic, anyone, true},
        {"match: {vendor_device: \"8086:*\"}", kGpu, anyone, false},
        {"match: {vendor_device: \"8086:*\"}", vdpaSim("vdpa0"), anyone, false},
        {"match: {vendor_device: \"10de:2330\"}", kGpu, anyone, true},
        // class: 2, 4 and 6 digits
        {"match: {class: 0x08}", kDsa, anyone, true},
        {"match: {class: 0x08}", kOddClass, anyone, true},
        {"match: {class: 0x08}", kNic, anyone, false},
        {"match: {class: 0x0880}", kDsa, anyone, true},
        {"match: {class: 0x0880}", kOddClass, anyone, false},
        {"match: {class: 0x088000}", kDsa, anyone, true},
        {"match: {class: 0x088000}", pci("0000:6a:03.0", 0x8086, 1, 0x088001, 1), anyone, false},
        {"match: {class: 0x03}", kGpu, anyone, true},
        {"match: {class: 0x03}", vdpaSim("vdpa0"), anyone, false},
        // kind
        {"match: {kind: queue}", queue("wq0.0"), anyone, true},
        {"match: {kind: queue}", kDsa, anyone, false},
        {"match: {kind: pci}", kDsa, anyone, true},
        {"match: {kind: vdpa}", vdpaSim("vdpa0"), anyone, true},
        {"match: {kind: vdpa}", queue("wq0.0"), anyone, false},
        // iommu_group
        {"match: {iommu_group: 30}", kGpu, anyone, true},
        {"match: {iommu_group: 30}", kDsa, anyone, false},
        {"match: {iommu_group: 30}", vdpaSim("vdpa0"), anyone, false},
        {"match: {iommu_group: 0}", pci("0000:00:00.0", 0x8086, 1, 0x060000, 0), anyone, true},
        // tags: globs inside a tag; a list needs every tag
        {"match: {tag: gpus}", kGpu, anyone, true},
        {"match: {tag: gpus}", pci("0000:4e:00.3", 0x10de, 1, 0x030200, 31), anyone, true},
        {"match: {tag: gpus}", kNic, anyone, false},
        {"match: {tag: [gpus, big-bar]}", kGpu, anyone, true},
        {"match: {tag: [gpus, big-bar]}", kNic, anyone, false},
        // several keys: all must fit
        {"match: {kind: queue, vendor_device: \"8086:*\", class: 0x0880}", queue("wq0.1"), anyone,
         true},
        {"match: {kind: queue, vendor_device: \"8086:*\", class: 0x0880}", kDsa, anyone, false},
        {"match: {kind: pci, vendor_device: \"8086:*\", class: 0x0880}", kNic, anyone, false},
        {"match: {device: \"0000:6a:*\", iommu_group: 41}", kIaa, anyone, true},
        {"match: {device: \"0000:6a:*\", iommu_group: 41}", kDsa, anyone, false},
        // allow.vms
        {"match: {kind: pci}\nallow: {vms: \"web-*\"}", kGpu, who("web-1", 1000), true},
        {"match: {kind: pci}\nallow: {vms: \"web-*\"}", kGpu, who("db-1", 1000), false},
        {"match: {kind: pci}\nallow: {vms: \"web-*\"}", kGpu, who("", 0), false},
        {"match: {kind: pci}\nallow: {vms: [web-1, \"db-?\"]}", kGpu, who("db-2", 1000), true},
        {"match: {kind: pci}\nallow: {vms: [web-1, \"db-?\"]}", kGpu, who("db-10", 1000), false},
        // allow.uids
        {"match: {kind: pci}\nallow: {uids: [0, 64055]}", kGpu, who("vm", 64055), true},
        {"match: {kind: pci}\nallow: {uids: [0, 64055]}", kGpu, who("vm", 0), true},
        {"match: {kind: pci}\nallow: {uids: [0, 64055]}", kGpu, who("vm", 1000), false},
        // allow.groups (numeric gids need no host group)
        {"match: {kind: pci}\nallow: {groups: [\"100\"]}", kGpu, who("vm", 1000, {5, 100}), true},
        {"match: {kind: pci}\nallow: {groups: [\"100\"]}", kGpu, who("vm", 1000, {5}), false},
        {"match: {kind: pci}\nallow: {groups: [\"100\"]}", kGpu, who("vm", 100), false},
        {"match: {kind: pci}\nallow: {groups: [100, 200]}", kGpu, who("vm", 1000, {200}), true},
        // uids OR groups
        {"match: {kind: pci}\nallow: {uids: [64055], groups: [\"100\"]}", kGpu, who("vm", 64055),
         true},
        {"match: {kind: pci}\nallow: {uids: [64055], groups: [\"100\"]}", kGpu,
         who("vm", 1000, {100}), true},
        {"match: {kind: pci}\nallow: {uids: [64055], groups: [\"100\"]}", kGpu,
         who("vm", 1000, {101}), false},
        // vms AND (uids OR groups)
        {"match: {kind: pci}\nallow: {vms: web-1, uids: [0]}", kGpu, who("web-1", 0), true},
        {"match: {kind: pci}\nallow: {vms: web-1, uids: [0]}", kGpu, who("web-1", 1000), false},
        {"match: {kind: pci}\nallow: {vms: web-1, uids: [0]}", kGpu, who("web-2", 0), false},
        {"match: {kind: pci}\nallow: {vms: web-1, groups: [\"100\"]}", kGpu,
         who("web-1", 1000, {100}), true},
        // no allow: anyone
        {"match: {kind: pci}", kGpu, who("", 0), true},
        {"match: {kind: pci}", kGpu, who("anything", 12345, {1, 2, 3}), true},
        // a deny rule's match and allow work the same way
        {"action: deny\nmatch: {kind: pci}\nallow: {uids: [0]}", kGpu, who("vm", 0), true},
        {"action: deny\nmatch: {kind: pci}\nallow: {uids: [0]}", kGpu, who("vm", 1), false},
    };
    for (const auto& c : cases) {
        const std::string text = ruleConfig(c.rule);
        SCOPED_TRACE(text + "device " + c.device.id + ", vm '" + c.requester.vm + "', uid " +
                     std::to_string(c.requester.uid));
        auto config = load(text);
        ASSERT_NE(config, nullptr);
        ASSERT_EQ(config->rules.size(), 1U);
        const Rule& rule = config->rules[0];
        EXPECT_EQ(rule.matchesDevice(c.device, config->tags) && rule.matchesRequester(c.requester),
                  c.expected);
        const RuleDecision d = config->decide(c.device, c.requester);
        EXPECT_EQ(d.rule, c.expected ? &rule : nullptr);
    }
}

TEST(RuleMatch, PluginOptions) {
    auto c = load(ruleConfig("match: {kind: queue}\nlimits: {auto_bind: yes, shared_limit: 4}"));
    ASSERT_NE(c, nullptr);
    using Options = std::vector<std::pair<std::string, std::string>>;
    EXPECT_EQ(c->rules[0].pluginOptions(), (Options{{"auto_bind", "true"}, {"shared_limit", "4"}}));
    c = load(ruleConfig("match: {kind: pci}"));
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->rules[0].pluginOptions(), (Options{{"auto_bind", "false"}}));
    EXPECT_EQ(c->rules[0].action, RuleAction::Allow);
    EXPECT_EQ(c->rules[0].limits.mode, ModeLimit::Any);
    EXPECT_EQ(c->rules[0].line, 5);
}

// --- decisions, quotas, admins -----------------------------------------------

constexpr const char* kDecideConfig = R"(default_policy: deny
admin_group: "4242"
pasid:
  default_quota: 100
  quotas:
    web-1: 64
    "web-*": 32
    "db-*": 1024
rules:
  - name: keep-host-nic
    action: deny
    match:
      device: "0000:38:00.0"
  - name: root-pci
    match: {kind: pci}
    allow: {uids: [0]}
  - name: web-pci
    match: {kind: pci}
    allow: {vms: "web-*"}
)";

TEST(ConfigDecide, FirstMatchingRuleWins) {
    auto c = load(kDecideConfig);
    ASSERT_NE(c, nullptr);
    ASSERT_EQ(c->rules.size(), 3U);

    // The deny rule comes first: root does not get the NIC although root-pci would allow it.
    RuleDecision d = c->decide(kNic, who("web-1", 0));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.rule, &c->rules[0]);
    EXPECT_EQ(d.reason, "rule 'keep-host-nic' (line 10) denies it");

    d = c->decide(kGpu, who("db-1", 0));
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.rule, &c->rules[1]);
    EXPECT_EQ(d.reason, "rule 'root-pci' (line 14) allows it");

    // root-pci fits the device, not the caller: the next rule decides.
    d = c->decide(kGpu, who("web-1", 1000));
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.rule, &c->rules[2]);
    EXPECT_EQ(d.rule, c->rule("web-pci"));
}

TEST(ConfigDecide, NoRuleMeansDefaultPolicy) {
    auto c = load(kDecideConfig);
    ASSERT_NE(c, nullptr);
    RuleDecision d = c->decide(kGpu, who("db-1", 1000));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.rule, nullptr);
    EXPECT_EQ(d.reason, "no rule matches 0000:4d:00.0 for vm db-1 and uid 1000; default_policy "
                        "is deny");
    d = c->decide(queue("wq0.0"), who("web-1", 0)); // no rule is about queues
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.rule, nullptr);

    auto open = load("default_policy: allow\nrules:\n  - name: a\n    action: deny\n"
                     "    match: {kind: vdpa}\n");
    ASSERT_NE(open, nullptr);
    d = open->decide(kGpu, who("db-1", 1000));
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.rule, nullptr);
    EXPECT_THAT(d.reason, HasSubstr("default_policy is allow"));
    d = open->decide(vdpaSim("vdpa0"), who("db-1", 1000));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.rule, &open->rules[0]);
}

TEST(ConfigDecide, RuleByName) {
    auto c = load(kDecideConfig);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->rule("keep-host-nic"), &c->rules[0]);
    EXPECT_EQ(c->rule("root-pci"), &c->rules[1]);
    EXPECT_EQ(c->rule("nope"), nullptr);
    EXPECT_EQ(c->rules[0].action, RuleAction::Deny);
    EXPECT_EQ(c->rules[1].action, RuleAction::Allow);
}

TEST(ConfigDecide, PasidQuotaFirstGlobWins) {
    auto c = load(kDecideConfig);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->pasidQuotaFor("web-1"), 64U); // before "web-*"
    EXPECT_EQ(c->pasidQuotaFor("web-2"), 32U);
    EXPECT_EQ(c->pasidQuotaFor("db-9"), 1024U);
    EXPECT_EQ(c->pasidQuotaFor("render-1"), 100U);
    EXPECT_EQ(c->pasidQuotaFor(""), 100U);

    auto reversed = load("pasid:\n  quotas:\n    \"web-*\": 32\n    web-1: 64\n");
    ASSERT_NE(reversed, nullptr);
    EXPECT_EQ(reversed->pasidQuotaFor("web-1"), 32U);
    EXPECT_EQ(reversed->pasidQuotaFor("other"), 256U);
}

TEST(ConfigDecide, IsAdmin) {
    auto c = load(kDecideConfig);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->adminGroup, "4242");
    EXPECT_EQ(c->adminGid, gid_t{4242});
    EXPECT_TRUE(c->isAdmin(0, {}));
    EXPECT_TRUE(c->isAdmin(1000, {100, 4242}));
    EXPECT_FALSE(c->isAdmin(1000, {100}));
    EXPECT_FALSE(c->isAdmin(4242, {}));

    auto rootOnly = load("default_policy: deny\n");
    ASSERT_NE(rootOnly, nullptr);
    EXPECT_TRUE(rootOnly->isAdmin(0, {}));
    EXPECT_FALSE(rootOnly->isAdmin(1000, {4242}));
    EXPECT_FALSE(rootOnly->isAdmin(1000, {0}));
}

// --- globs --------------------------------------------------------------------

TEST(ConfigGlob, Basics) {
    EXPECT_TRUE(globMatch("*", ""));
    EXPECT_TRUE(globMatch("*", "anything at all"));
    EXPECT_TRUE(globMatch("web-*", "web-"));
    EXPECT_TRUE(globMatch("web-*", "web-12"));
    EXPECT_FALSE(globMatch("web-*", "db-web-1"));
    EXPECT_TRUE(globMatch("wq?.0", "wq1.0"));
    EXPECT_FALSE(globMatch("wq?.0", "wq10.0"));
    EXPECT_FALSE(globMatch("wq?.0", "wq.0"));
    EXPECT_TRUE(globMatch("[ab]x", "ax"));
    EXPECT_TRUE(globMatch("[ab]x", "bx"));
    EXPECT_FALSE(globMatch("[ab]x", "cx"));
    EXPECT_TRUE(globMatch("[!a]x", "cx"));
    EXPECT_FALSE(globMatch("[!a]x", "ax"));
    EXPECT_TRUE(globMatch("0000:4[d-e]:00.*", "0000:4e:00.7"));
    EXPECT_FALSE(globMatch("0000:4[d-e]:00.*", "0000:4f:00.7"));
    // The whole string, not a part of it.
    EXPECT_FALSE(globMatch("wq0", "wq0.0"));
    EXPECT_FALSE(globMatch("0.0", "wq0.0"));
    EXPECT_TRUE(globMatch("web-1", "web-1"));
    EXPECT_FALSE(globMatch("", "x"));
    EXPECT_TRUE(globMatch("", ""));
}

} // namespace
} // namespace svad::core
