#include "svad/core/config.h"

#include "svad/core/listen_address.h"
#include "svad/core/text.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fnmatch.h>
#include <grp.h>
#include <limits>
#include <set>
#include <string_view>
#include <yaml-cpp/yaml.h>

namespace svad::core {

const char* toString(DeviceKind kind) {
    switch (kind) {
    case DeviceKind::Pci:
        return "pci";
    case DeviceKind::Vdpa:
        return "vdpa";
    case DeviceKind::Queue:
        return "queue";
    }
    return "unknown";
}

bool globMatch(const std::string& pattern, const std::string& text) {
    return ::fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

namespace {

// Validates one YAML document into a Config, collecting every error.
class Parser {
public:
    Parser(std::string name, std::string defaultPluginDir)
        : name_(std::move(name)), defaultPluginDir_(std::move(defaultPluginDir)) {}

    ConfigLoad run(const std::string& text) {
        auto config = std::make_shared<Config>();
        config->path = name_;
        config->pluginDir = defaultPluginDir_;
        if (text.size() > kMaxConfigBytes) {
            errors_.push_back(name_ + ": larger than " + std::to_string(kMaxConfigBytes) +
                              " bytes (1 MiB), the most a configuration file may hold");
            return finish(nullptr);
        }
        if (!validUtf8(text)) {
            errors_.push_back(firstInvalidByte(text));
            return finish(nullptr);
        }
        YAML::Node root;
        try {
            root = YAML::Load(text);
        } catch (const YAML::Exception& e) {
            errors_.push_back(at(e.mark) + e.msg);
            return finish(nullptr);
        }
        // Escapes in quoted scalars ("\0", "\uFFFF") can still make a string sd-bus refuses.
        if (!scalarsValid(root)) {
            return finish(nullptr);
        }
        if (!root.IsDefined() || root.IsNull()) {
            return finish(std::move(config)); // an empty file: the defaults
        }
        if (!root.IsMap()) {
            error(root, "expected a mapping of settings at the top level");
            return finish(nullptr);
        }
        top(root, *config);
        return finish(std::move(config));
    }

private:
    // "FILE:LINE:COL: not valid UTF-8 (byte 0xff)" for the first byte that is not.
    std::string firstInvalidByte(const std::string& text) const {
        size_t line = 1;
        size_t lineStart = 0;
        size_t good = 0; // bytes known to be valid
        // Grow the valid prefix line by line, then byte by byte within the bad line.
        while (good < text.size()) {
            size_t end = text.find('\n', good);
            end = end == std::string::npos ? text.size() : end + 1;
            if (!validUtf8(std::string_view(text).substr(good, end - good))) {
                break;
            }
            good = end;
            ++line;
            lineStart = good;
        }
        const std::string_view sv(text);
        size_t bad = good;
        for (;;) {
            size_t len = 1;
            while (len <= 4 && bad + len <= sv.size() && !validUtf8(sv.substr(bad, len))) {
                ++len;
            }
            if (len > 4 || bad + len > sv.size()) {
                break; // no character starts here
            }
            bad += len;
        }
        bad = std::min(bad, text.size() - 1);
        static constexpr char kHex[] = "0123456789abcdef";
        const auto u = static_cast<unsigned char>(text[bad]);
        std::string byte = "0x";
        byte += kHex[u >> 4];
        byte += kHex[u & 0xf];
        // Columns count bytes, as yaml-cpp's marks do for the other errors.
        return name_ + ":" + std::to_string(line) + ":" + std::to_string(bad - lineStart + 1) +
               ": not valid UTF-8 (byte " + byte + "): keys and strings must be UTF-8";
    }

    bool scalarsValid(const YAML::Node& n) {
        if (n.IsScalar()) {
            if (!validUtf8(n.Scalar())) {
                error(n, "'" + cutUtf8(n.Scalar(), kEchoBytes) +
                             "' is not valid UTF-8 (an escape makes a character a string "
                             "cannot hold)");
                return false;
            }
            return true;
        }
        bool ok = true;
        if (n.IsMap()) {
            for (const auto& kv : n) {
                ok = scalarsValid(kv.first) && scalarsValid(kv.second) && ok;
            }
        } else if (n.IsSequence()) {
            for (const auto& item : n) {
                ok = scalarsValid(item) && ok;
            }
        }
        return ok;
    }

    ConfigLoad finish(std::shared_ptr<Config> config) {
        ConfigLoad out;
        out.errors = std::move(errors_);
        if (out.errors.empty()) {
            out.config = std::move(config);
        }
        return out;
    }

    std::string at(const YAML::Mark& m) const {
        if (m.is_null()) {
            return name_ + ": ";
        }
        return name_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": ";
    }
    void error(const YAML::Node& n, const std::string& message) {
        errors_.push_back(at(n.Mark()) + message);
    }

    // Reports a key given twice in a mapping whose keys are the administrator's names.
    void noRepeats(const YAML::Node& map, const std::string& where) {
        std::set<std::string> seen;
        for (const auto& kv : map) {
            std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
            if (!seen.insert(key).second) {
                error(kv.first,
                      std::string("key '").append(key).append("' appears twice in ").append(where));
            }
        }
    }

    // A mapping keyed by the administrator's names (tags, plugins, VMs): false, with
    // "WHERE: expected WHAT", when `n` is no mapping; a name given twice is an error.
    bool namedMap(const YAML::Node& n, const std::string& where, const std::string& what) {
        if (!n.IsMap()) {
            error(n, where + ": expected " + what);
            return false;
        }
        noRepeats(n, where);
        return true;
    }

    // Reports keys of `map` not in `known`.
    void onlyKeys(const YAML::Node& map, const std::string& where,
                  const std::vector<std::string>& known) {
        std::set<std::string> seen;
        for (const auto& kv : map) {
            std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
            if (!seen.insert(key).second) {
                error(kv.first,
                      std::string("key '").append(key).append("' appears twice in ").append(where));
            }
            if (std::find(known.begin(), known.end(), key) == known.end()) {
                std::string list;
                for (const auto& k : known) {
                    list += (list.empty() ? "" : ", ") + k;
                }
                error(kv.first, std::string("unknown key '")
                                    .append(key)
                                    .append("' in ")
                                    .append(where)
                                    .append(" (expected one of: ")
                                    .append(list)
                                    .append(")"));
            }
        }
    }

    std::optional<std::string> str(const YAML::Node& n, const std::string& what) {
        if (!n.IsScalar() || n.Scalar().empty()) {
            error(n, what + ": expected a non-empty string");
            return std::nullopt;
        }
        return n.Scalar();
    }
    std::optional<std::string> path(const YAML::Node& n, const std::string& what) {
        auto s = str(n, what);
        if (s && s->front() != '/') {
            error(n, what + ": expected an absolute path, not '" + *s + "'");
            return std::nullopt;
        }
        return s;
    }
    std::optional<uint64_t> number(const YAML::Node& n, const std::string& what, uint64_t min,
                                   uint64_t max) {
        if (n.IsScalar()) {
            const std::string& s = n.Scalar();
            // Decimal, or hex with 0x; a leading 0 is not octal.
            const bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
            errno = 0;
            char* end = nullptr;
            unsigned long long v =
                std::strtoull(hex ? s.c_str() + 2 : s.c_str(), &end, hex ? 16 : 10);
            if (!s.empty() && std::isdigit(static_cast<unsigned char>(s.front())) != 0 &&
                errno == 0 && end != nullptr && *end == '\0' && v >= min && v <= max) {
                return v;
            }
        }
        error(n, what + ": expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max));
        return std::nullopt;
    }
    std::optional<bool> boolean(const YAML::Node& n, const std::string& what) {
        if (n.IsScalar()) {
            const std::string& s = n.Scalar();
            if (s == "true" || s == "yes" || s == "on") {
                return true;
            }
            if (s == "false" || s == "no" || s == "off") {
                return false;
            }
        }
        error(n, what + ": expected true or false");
        return std::nullopt;
    }
    // A string, or a non-empty list of strings.
    std::vector<std::string> strings(const YAML::Node& n, const std::string& what) {
        std::vector<std::string> out;
        if (n.IsSequence() && n.size() == 0) {
            error(n, what + ": expected at least one entry (an empty list would match anything)");
            return out;
        }
        if (n.IsScalar()) {
            if (auto s = str(n, what)) {
                out.push_back(*s);
            }
        } else if (n.IsSequence()) {
            for (const auto& item : n) {
                if (auto s = str(item, what + " item")) {
                    out.push_back(*s);
                }
            }
        } else {
            error(n, what + ": expected a string or a list of strings");
        }
        return out;
    }
    // One scalar, or a non-empty list of them.
    std::vector<YAML::Node> scalarOrList(const YAML::Node& n, const std::string& what,
                                         const std::string& one) {
        std::vector<YAML::Node> out;
        if (n.IsScalar()) {
            out.push_back(n);
        } else if (n.IsSequence() && n.size() > 0) {
            for (const auto& item : n) {
                out.push_back(item);
            }
        } else if (n.IsSequence()) {
            error(n, what + ": an empty list would let anyone in: remove the key instead");
        } else {
            error(n, what + ": expected " + one + " or a list of them");
        }
        return out;
    }
    template <typename T>
    std::optional<T> choice(const YAML::Node& n, const std::string& what,
                            const std::vector<std::pair<std::string, T>>& choices) {
        std::string list;
        for (const auto& [k, v] : choices) {
            if (n.IsScalar() && n.Scalar() == k) {
                return v;
            }
            list += (list.empty() ? "" : ", ") + k;
        }
        error(n, what + ": expected one of " + list);
        return std::nullopt;
    }
    std::optional<gid_t> group(const YAML::Node& n, const std::string& what) {
        auto name = str(n, what);
        if (!name) {
            return std::nullopt;
        }
        if (std::all_of(name->begin(), name->end(), [](char c) { return c >= '0' && c <= '9'; })) {
            errno = 0;
            unsigned long long gid = std::strtoull(name->c_str(), nullptr, 10);
            if (errno != 0 || gid >= std::numeric_limits<uint32_t>::max()) {
                error(n, what + ": group id " + *name + " is out of range");
                return std::nullopt;
            }
            return static_cast<gid_t>(gid);
        }
        struct group gr {};
        struct group* result = nullptr;
        std::vector<char> buf(16384);
        int rc = ::getgrnam_r(name->c_str(), &gr, buf.data(), buf.size(), &result);
        if (rc != 0 || result == nullptr) {
            error(n, what + ": no unix group named '" + *name + "' on this host");
            return std::nullopt;
        }
        return result->gr_gid;
    }

    void top(const YAML::Node& root, Config& c) {
        onlyKeys(root, "the top level",
                 {"backend", "sysfs_root", "dev_root", "state_dir", "plugin_dir", "metrics",
                  "admin_group", "default_policy", "pasid", "tags", "plugins", "rules"});
        if (auto n = root["backend"]) {
            if (auto b = choice<std::string>(n, "backend", {{"linux", "linux"}, {"sim", "sim"}})) {
                c.backend = *b;
            }
        }
        if (auto n = root["sysfs_root"]) {
            c.sysfsRoot = path(n, "sysfs_root");
        }
        if (auto n = root["dev_root"]) {
            c.devRoot = path(n, "dev_root");
        }
        if (auto n = root["state_dir"]) {
            c.stateDir = path(n, "state_dir");
        }
        if (auto n = root["plugin_dir"]) {
            if (auto p = path(n, "plugin_dir")) {
                c.pluginDir = *p;
            }
        }
        if (auto n = root["metrics"]) {
            metrics(n, c);
        }
        if (auto n = root["admin_group"]) {
            if (auto g = group(n, "admin_group")) {
                c.adminGroup = n.Scalar();
                c.adminGid = *g;
            }
        }
        if (auto n = root["default_policy"]) {
            if (auto a = choice<RuleAction>(
                    n, "default_policy",
                    {{"deny", RuleAction::Deny}, {"allow", RuleAction::Allow}})) {
                c.defaultPolicy = *a;
            }
        }
        if (auto n = root["pasid"]) {
            pasid(n, c);
        }
        if (auto n = root["tags"]) {
            tags(n, c);
        }
        if (auto n = root["plugins"]) {
            plugins(n, c);
        }
        if (auto n = root["rules"]) {
            rules(n, c);
        }
    }

    void metrics(const YAML::Node& n, Config& c) {
        if (!n.IsMap()) {
            error(n, "metrics: expected a mapping with 'address'");
            return;
        }
        onlyKeys(n, "metrics", {"address"});
        if (auto a = n["address"]) {
            auto s = str(a, "metrics.address");
            if (!s) {
                return;
            }
            if (auto err = checkListenAddress(*s)) {
                error(a, "metrics.address: " + *err);
                return;
            }
            c.metricsAddress = *s;
        }
    }

    void pasid(const YAML::Node& n, Config& c) {
        if (!n.IsMap()) {
            error(n, "pasid: expected a mapping with default_quota and quotas");
            return;
        }
        onlyKeys(n, "pasid", {"default_quota", "quotas"});
        constexpr uint64_t kMaxPasids = uint64_t{1} << 20;
        if (auto q = n["default_quota"]) {
            if (auto v = number(q, "pasid.default_quota", 0, kMaxPasids)) {
                c.defaultPasidQuota = static_cast<uint32_t>(*v);
            }
        }
        if (auto q = n["quotas"]) {
            if (!namedMap(q, "pasid.quotas", "a mapping of VM name or glob to a number")) {
                return;
            }
            for (const auto& kv : q) {
                auto vm = str(kv.first, "pasid.quotas key");
                auto v = number(kv.second, "pasid.quotas." + (vm ? *vm : std::string("?")), 0,
                                kMaxPasids);
                if (vm && v) {
                    c.pasidQuotas.emplace_back(*vm, static_cast<uint32_t>(*v));
                }
            }
        }
    }

    void tags(const YAML::Node& n, Config& c) {
        if (!namedMap(n, "tags", "a mapping of tag name to device ids or globs")) {
            return;
        }
        for (const auto& kv : n) {
            auto tag = str(kv.first, "tag name");
            auto devices = strings(kv.second, "tags." + (tag ? *tag : std::string("?")));
            if (tag) {
                c.tags[*tag] = devices;
            }
        }
    }

    void plugins(const YAML::Node& n, Config& c) {
        if (!namedMap(n, "plugins", "a mapping of plugin name to its settings")) {
            return;
        }
        for (const auto& kv : n) {
            auto name = str(kv.first, "plugin name");
            if (!name) {
                continue;
            }
            auto& opts = c.pluginOptions[*name];
            if (kv.second.IsNull()) {
                continue;
            }
            if (!namedMap(kv.second, "plugins." + *name, "a mapping of settings")) {
                continue;
            }
            for (const auto& o : kv.second) {
                auto key = str(o.first, "plugins." + *name + " key");
                if (key && o.second.IsScalar()) {
                    opts.emplace_back(*key, o.second.Scalar());
                } else if (key) {
                    error(o.second, "plugins." + *name + "." + *key + ": expected a single value");
                }
            }
        }
    }

    void rules(const YAML::Node& n, Config& c) {
        if (!n.IsSequence()) {
            error(n, "rules: expected a list of rules");
            return;
        }
        std::set<std::string> names;
        for (const auto& item : n) {
            if (!item.IsMap()) {
                error(item, "rule: expected a mapping with name, match, allow and limits");
                continue;
            }
            Rule r;
            r.line = item.Mark().line + 1;
            onlyKeys(item, "a rule", {"name", "action", "match", "allow", "limits"});
            if (auto name = item["name"]) {
                if (auto s = str(name, "rule name")) {
                    r.name = *s;
                    if (!names.insert(*s).second) {
                        error(name, "rule name '" + *s + "' is used twice");
                    }
                }
            } else {
                error(item, "rule: 'name' is required");
            }
            const std::string where = "rule '" + r.name + "'";
            if (auto a = item["action"]) {
                if (auto v = choice<RuleAction>(
                        a, where + " action",
                        {{"allow", RuleAction::Allow}, {"deny", RuleAction::Deny}})) {
                    r.action = *v;
                }
            }
            if (auto m = item["match"]) {
                match(m, where, c, r.match);
            } else {
                error(item, where + ": 'match' is required (use device: \"*\" for every device)");
            }
            if (auto w = item["allow"]) {
                who(w, where, r.who);
            }
            if (auto l = item["limits"]) {
                limits(l, where, r.limits);
            }
            c.rules.push_back(std::move(r));
        }
    }

    void match(const YAML::Node& n, const std::string& where, const Config& c, RuleMatch& m) {
        if (!n.IsMap()) {
            error(n, where + " match: expected a mapping");
            return;
        }
        onlyKeys(n, where + " match",
                 {"device", "vendor_device", "class", "kind", "iommu_group", "tag"});
        if (n.size() == 0) {
            error(n, where + " match: expected at least one of device, vendor_device, class, "
                             "kind, iommu_group, tag");
        }
        if (auto d = n["device"]) {
            m.devices = strings(d, where + " match.device");
        }
        if (auto vd = n["vendor_device"]) {
            vendorDevice(vd, where, m);
        }
        if (auto cl = n["class"]) {
            classCode(cl, where, m);
        }
        if (auto k = n["kind"]) {
            m.kind = choice<DeviceKind>(k, where + " match.kind",
                                        {{"pci", DeviceKind::Pci},
                                         {"vdpa", DeviceKind::Vdpa},
                                         {"queue", DeviceKind::Queue}});
        }
        if (auto g = n["iommu_group"]) {
            if (auto v = number(g, where + " match.iommu_group", 0,
                                std::numeric_limits<uint32_t>::max())) {
                m.group = static_cast<uint32_t>(*v);
            }
        }
        if (auto t = n["tag"]) {
            m.tags = strings(t, where + " match.tag");
            for (const auto& tag : m.tags) {
                if (c.tags.count(tag) == 0) {
                    error(t, std::string(where)
                                 .append(" match.tag: no tag '")
                                 .append(tag)
                                 .append("' under tags"));
                }
            }
        }
    }

    static std::optional<uint16_t> hex16(const std::string& s) {
        if (s.empty() || s.size() > 4 ||
            !std::all_of(s.begin(), s.end(), [](char ch) { return std::isxdigit(ch) != 0; })) {
            return std::nullopt;
        }
        return static_cast<uint16_t>(std::stoul(s, nullptr, 16));
    }

    void vendorDevice(const YAML::Node& n, const std::string& where, RuleMatch& m) {
        const std::string what = where + " match.vendor_device";
        if (!n.IsScalar()) {
            error(n, what + ": expected VVVV:DDDD in hex (DDDD may be *)");
            return;
        }
        const std::string& s = n.Scalar();
        auto colon = s.find(':');
        auto vendor = colon == std::string::npos ? std::nullopt : hex16(s.substr(0, colon));
        std::optional<uint16_t> device;
        bool anyDevice = colon != std::string::npos && s.substr(colon + 1) == "*";
        if (!anyDevice && colon != std::string::npos) {
            device = hex16(s.substr(colon + 1));
        }
        if (!vendor || (!anyDevice && !device)) {
            error(n, what + ": expected VVVV:DDDD in hex (DDDD may be *), not '" + s + "'");
            return;
        }
        m.vendor = vendor;
        m.device = device;
    }

    void classCode(const YAML::Node& n, const std::string& where, RuleMatch& m) {
        const std::string what = where + " match.class";
        std::string s = n.IsScalar() ? n.Scalar() : "";
        if (s.rfind("0x", 0) == 0 || s.rfind("0X", 0) == 0) {
            s = s.substr(2);
        }
        if (s.empty() || s.size() > 6 || s.size() % 2 != 0 ||
            !std::all_of(s.begin(), s.end(), [](char ch) { return std::isxdigit(ch) != 0; })) {
            error(n, what + ": expected a class in hex: 2, 4 or 6 digits (0x08, 0x0880, 0x088000)");
            return;
        }
        m.classValue = static_cast<uint32_t>(std::stoul(s, nullptr, 16));
        m.classShift = static_cast<uint32_t>((6 - s.size()) * 4);
    }

    void who(const YAML::Node& n, const std::string& where, RuleWho& w) {
        if (!n.IsMap()) {
            error(n, where + " allow: expected a mapping with vms, uids and groups");
            return;
        }
        onlyKeys(n, where + " allow", {"vms", "uids", "groups"});
        if (auto v = n["vms"]) {
            w.vms = strings(v, where + " allow.vms");
        }
        if (auto u = n["uids"]) {
            for (const auto& item : scalarOrList(u, where + " allow.uids", "a number")) {
                if (auto id = number(item, where + " allow.uids item", 0,
                                     std::numeric_limits<uint32_t>::max() - 1)) {
                    w.uids.push_back(static_cast<uid_t>(*id));
                }
            }
        }
        if (auto g = n["groups"]) {
            for (const auto& item : scalarOrList(g, where + " allow.groups", "a group")) {
                if (auto gid = group(item, where + " allow.groups item")) {
                    w.groupNames.push_back(item.Scalar());
                    w.gids.push_back(*gid);
                }
            }
        }
    }

    void limits(const YAML::Node& n, const std::string& where, RuleLimits& l) {
        if (!n.IsMap()) {
            error(n, where + " limits: expected a mapping");
            return;
        }
        onlyKeys(n, where + " limits",
                 {"pasid_quota", "max_contexts", "mode", "auto_bind", "shared_limit"});
        constexpr uint64_t kMax = 1U << 20;
        if (auto q = n["pasid_quota"]) {
            if (auto v = number(q, where + " limits.pasid_quota", 0, kMax)) {
                l.pasidQuota = static_cast<uint32_t>(*v);
            }
        }
        if (auto q = n["max_contexts"]) {
            if (auto v = number(q, where + " limits.max_contexts", 1, kMax)) {
                l.maxContexts = static_cast<uint32_t>(*v);
            }
        }
        if (auto q = n["mode"]) {
            if (auto v = choice<ModeLimit>(q, where + " limits.mode",
                                           {{"any", ModeLimit::Any},
                                            {"handoff", ModeLimit::Handoff},
                                            {"attached", ModeLimit::Attached}})) {
                l.mode = *v;
            }
        }
        if (auto q = n["auto_bind"]) {
            if (auto v = boolean(q, where + " limits.auto_bind")) {
                l.autoBind = *v;
            }
        }
        if (auto q = n["shared_limit"]) {
            if (auto v = number(q, where + " limits.shared_limit", 1, kMax)) {
                l.sharedLimit = static_cast<uint32_t>(*v);
            }
        }
    }

    std::string name_;
    std::string defaultPluginDir_;
    std::vector<std::string> errors_;
};

} // namespace

bool Rule::matchesDevice(const DeviceFacts& d,
                         const std::map<std::string, std::vector<std::string>>& tags) const {
    if (match.kind && *match.kind != d.kind) {
        return false;
    }
    if (!match.devices.empty() &&
        std::none_of(match.devices.begin(), match.devices.end(),
                     [&d](const std::string& g) { return globMatch(g, d.id); })) {
        return false;
    }
    if (match.vendor && (!d.vendor || *d.vendor != *match.vendor)) {
        return false;
    }
    if (match.device && (!d.device || *d.device != *match.device)) {
        return false;
    }
    if (match.classValue &&
        (!d.classCode || (*d.classCode >> match.classShift) != *match.classValue)) {
        return false;
    }
    if (match.group && (!d.group || *d.group != *match.group)) {
        return false;
    }
    for (const auto& tag : match.tags) {
        auto t = tags.find(tag);
        if (t == tags.end() ||
            std::none_of(t->second.begin(), t->second.end(),
                         [&d](const std::string& g) { return globMatch(g, d.id); })) {
            return false;
        }
    }
    return true;
}

bool Rule::matchesRequester(const Requester& r) const {
    if (!who.vms.empty() &&
        std::none_of(who.vms.begin(), who.vms.end(),
                     [&r](const std::string& g) { return globMatch(g, r.vm); })) {
        return false;
    }
    // uids and groups: the caller qualifies through either when both are given.
    if (who.uids.empty() && who.gids.empty()) {
        return true;
    }
    if (std::find(who.uids.begin(), who.uids.end(), r.uid) != who.uids.end()) {
        return true;
    }
    return std::any_of(who.gids.begin(), who.gids.end(), [&r](gid_t g) {
        return std::find(r.gids.begin(), r.gids.end(), g) != r.gids.end();
    });
}

std::vector<std::pair<std::string, std::string>> Rule::pluginOptions() const {
    std::vector<std::pair<std::string, std::string>> out;
    out.emplace_back("auto_bind", limits.autoBind ? "true" : "false");
    if (limits.sharedLimit) {
        out.emplace_back("shared_limit", std::to_string(*limits.sharedLimit));
    }
    return out;
}

RuleDecision Config::decide(const DeviceFacts& device, const Requester& requester) const {
    for (const auto& r : rules) {
        if (r.matchesDevice(device, tags) && r.matchesRequester(requester)) {
            RuleDecision d;
            d.allowed = r.action == RuleAction::Allow;
            d.rule = &r;
            d.reason = std::string("rule '") + r.name + "' (line " + std::to_string(r.line) + ") " +
                       (d.allowed ? "allows" : "denies") + " it";
            return d;
        }
    }
    RuleDecision d;
    d.allowed = defaultPolicy == RuleAction::Allow;
    d.reason = std::string("no rule matches ") + device.id + " for vm " + requester.vm +
               " and uid " + std::to_string(requester.uid) + "; default_policy is " +
               (d.allowed ? "allow" : "deny");
    return d;
}

uint32_t Config::pasidQuotaFor(const std::string& vm) const {
    for (const auto& [glob, quota] : pasidQuotas) {
        if (globMatch(glob, vm)) {
            return quota;
        }
    }
    return defaultPasidQuota;
}

bool Config::isAdmin(uid_t uid, const std::vector<gid_t>& gids) const {
    if (uid == 0) {
        return true;
    }
    return adminGid && std::find(gids.begin(), gids.end(), *adminGid) != gids.end();
}

const Rule* Config::rule(const std::string& name) const {
    for (const auto& r : rules) {
        if (r.name == name) {
            return &r;
        }
    }
    return nullptr;
}

std::shared_ptr<const Config> defaultConfig(const std::string& pluginDir) {
    auto c = std::make_shared<Config>();
    c->pluginDir = pluginDir;
    return c;
}

ConfigLoad parseConfig(const std::string& text, const std::string& name,
                       const std::string& defaultPluginDir) {
    return Parser(name, defaultPluginDir).run(text);
}

} // namespace svad::core
