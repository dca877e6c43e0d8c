#include "svad/cli/render.h"

#include "svad/core/parse.h"
#include "svad/names.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace svad::cli {

std::string jsonString(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\t':
            out += "\\t";
            break;
        default:
            if (u < 0x20) {
                char buf[8];
                (void)std::snprintf(buf, sizeof buf, "\\u%04x", u);
                out += buf;
            } else {
                out += c;
            }
        }
    }
    return out + "\"";
}

namespace {

std::string hex(uint64_t v, int width) {
    char buf[32];
    (void)std::snprintf(buf, sizeof buf, "0x%0*llx", width, static_cast<unsigned long long>(v));
    return buf;
}

const std::string kContextPrefix = std::string(names::kRootPath) + "/context/";

// The enumerations of svad's interfaces, as the interface XML documents them.
struct EnumNames {
    std::string_view iface;
    std::string_view property;
    std::vector<std::string_view> names; // by value
};
const std::vector<EnumNames>& enumTable() {
    static const std::vector<EnumNames> table = {
        {names::kDeviceInterface, "Kind", {"unknown", "PCI function", "vDPA device"}},
        {names::kDeviceInterface, "HeaderType", {"endpoint", "PCI bridge", "CardBus bridge"}},
        {names::kUnitInterface, "Kind", {"unknown", "Intel VT-d", "AMD-Vi", "Arm SMMUv3", "other"}},
        {names::kGroupInterface,
         "Type",
         {"unknown", "DMA", "DMA-FQ", "identity", "blocked", "unmanaged"}},
        {names::kQueueInterface, "Mode", {"unknown", "dedicated", "shared"}},
        {names::kQueueInterface, "Type", {"unknown", "none", "kernel", "user"}},
        {names::kQueueInterface, "State", {"unknown", "disabled", "enabled", "locked"}},
        {names::kContextInterface, "Mode", {"unknown", "handoff", "attached", "reserved"}},
        {names::kContextInterface, "State", {"unknown", "active", "degraded"}},
    };
    return table;
}

const EnumNames* enumOf(const std::string& iface, const std::string& name) {
    for (const auto& e : enumTable()) {
        if (e.iface == iface && e.property == name) {
            return &e;
        }
    }
    return nullptr;
}

// Properties that are CLOCK_REALTIME microseconds.
bool isTime(const std::string& name) {
    return name == "CreatedTime" || name == "LastScanTime";
}

} // namespace

std::string enumName(const std::string& iface, const std::string& name, uint64_t value) {
    const EnumNames* e = enumOf(iface, name);
    if (e != nullptr && value < e->names.size()) {
        return std::string(e->names[value]);
    }
    return "unknown (" + std::to_string(value) + ")";
}

std::string objectLabel(const std::string& path) {
    if (path == "/" || path.empty()) {
        return "-";
    }
    if (path.rfind(kContextPrefix, 0) == 0) {
        return "context " + path.substr(kContextPrefix.size());
    }
    for (std::string_view prefix : {names::kDevicePrefix, names::kVdpaPrefix, names::kQueuePrefix,
                                    names::kUnitPrefix, names::kGroupPrefix}) {
        if (path.size() > prefix.size() && path.rfind(prefix, 0) == 0 &&
            path.find('/', prefix.size()) == std::string::npos) {
            return core::labelName(std::string_view(path).substr(prefix.size()));
        }
    }
    return path;
}

std::string timeText(uint64_t usec, uint64_t nowUsec) {
    if (usec == 0) {
        return "never";
    }
    const auto secs = static_cast<time_t>(usec / 1000000);
    struct tm tm {};
    char buf[64];
    if (::localtime_r(&secs, &tm) == nullptr ||
        std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0) {
        return std::to_string(usec) + " us";
    }
    std::string out = buf;
    if (nowUsec >= usec) {
        const uint64_t ago = (nowUsec - usec) / 1000000;
        if (ago < 120) {
            out += " (" + std::to_string(ago) + " s ago)";
        } else if (ago < uint64_t{2} * 3600) {
            out += " (" + std::to_string(ago / 60) + " min ago)";
        } else if (ago < uint64_t{2} * 86400) {
            out += " (" + std::to_string(ago / 3600) + " h ago)";
        } else {
            out += " (" + std::to_string(ago / 86400) + " days ago)";
        }
    }
    return out;
}

namespace {

std::string orDash(const std::string& s) {
    return s.empty() ? "-" : s;
}

uint64_t nowUsec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000U + static_cast<uint64_t>(ts.tv_nsec) / 1000U;
}

template <typename T>
std::string joinList(const std::vector<T>& items, bool json,
                     const std::function<std::string(const T&)>& one) {
    if (json) {
        std::string out = "[";
        for (size_t i = 0; i < items.size(); ++i) {
            out += (i > 0 ? "," : "") + one(items[i]);
        }
        return out + "]";
    }
    // For a person: "-" for none; items apart by spaces, or by "; " when an item
    // has spaces of its own (warnings, blockers).
    if (items.empty()) {
        return "-";
    }
    std::vector<std::string> texts;
    bool spaces = false;
    for (const auto& item : items) {
        texts.push_back(one(item));
        spaces = spaces || texts.back().find(' ') != std::string::npos;
    }
    std::string out;
    for (size_t i = 0; i < texts.size(); ++i) {
        out += (i > 0 ? (spaces ? "; " : " ") : "") + texts[i];
    }
    return out;
}

// A property value of interface `iface` as text for a person (json=false) or as an
// exact JSON value (json=true).
std::string valueText(const std::string& iface, const std::string& name, const Value& v,
                      bool json) {
    const std::string& sig = v.peekValueType();
    auto q = [json](const std::string& s) { return json ? jsonString(s) : s; };
    if (!json && sig == "u" && enumOf(iface, name) != nullptr) {
        return enumName(iface, name, v.get<uint32_t>());
    }
    if (!json && sig == "y" && enumOf(iface, name) != nullptr) {
        return enumName(iface, name, v.get<uint8_t>());
    }
    if (!json && sig == "t" && isTime(name)) {
        return timeText(v.get<uint64_t>(), nowUsec());
    }
    if (!json && sig == "i" && (name == "NumaNode" || name == "GroupId") &&
        v.get<int32_t>() == -1) {
        return "-";
    }
    if (sig == "s") {
        const auto text = v.get<std::string>();
        return json ? jsonString(text) : orDash(text);
    }
    if (sig == "o") {
        return json ? q(v.get<sdbus::ObjectPath>()) : objectLabel(v.get<sdbus::ObjectPath>());
    }
    if (sig == "b") {
        return v.get<bool>() ? (json ? "true" : "yes") : (json ? "false" : "no");
    }
    if (sig == "y") {
        return std::to_string(v.get<uint8_t>());
    }
    if (sig == "q") {
        auto x = v.get<uint16_t>();
        bool asHex = name.find("Id") != std::string::npos || name == "AcsCapability";
        return asHex && !json ? hex(x, 4) : std::to_string(x);
    }
    if (sig == "u") {
        auto x = v.get<uint32_t>();
        return name == "ClassCode" && !json ? hex(x, 6) : std::to_string(x);
    }
    if (sig == "i") {
        return std::to_string(v.get<int32_t>());
    }
    if (sig == "t") {
        auto x = v.get<uint64_t>();
        return (name == "Cap" || name == "Ecap") && !json ? hex(x, 16) : std::to_string(x);
    }
    if (sig == "as") {
        return joinList<std::string>(v.get<std::vector<std::string>>(), json, q);
    }
    if (sig == "ao") {
        return joinList<sdbus::ObjectPath>(
            v.get<std::vector<sdbus::ObjectPath>>(), json,
            [&q, json](const sdbus::ObjectPath& p) { return json ? q(p) : objectLabel(p); });
    }
    if (sig == "a(qqy)") {
        using S = sdbus::Struct<uint16_t, uint16_t, uint8_t>;
        const bool ext = name == "ExtendedCapabilities";
        return joinList<S>(v.get<std::vector<S>>(), json, [json, ext](const S& s) {
            if (json) {
                return std::string(ext ? "{\"offset\":" : "{\"vendor\":") +
                       std::to_string(std::get<0>(s)) +
                       ",\"id\":" + std::to_string(std::get<1>(s)) +
                       (ext ? ",\"version\":" : ",\"revision\":") + std::to_string(std::get<2>(s)) +
                       "}";
            }
            return (ext ? "[" + hex(std::get<0>(s), 3) + "]" : hex(std::get<0>(s), 4)) + ":" +
                   hex(std::get<1>(s), 4) + "v" + std::to_string(std::get<2>(s));
        });
    }
    if (sig == "a(tts)") {
        using S = sdbus::Struct<uint64_t, uint64_t, std::string>;
        return joinList<S>(v.get<std::vector<S>>(), json, [json](const S& s) {
            if (json) {
                return "{\"start\":" + std::to_string(std::get<0>(s)) +
                       ",\"end\":" + std::to_string(std::get<1>(s)) +
                       ",\"type\":" + jsonString(std::get<2>(s)) + "}";
            }
            return hex(std::get<0>(s), 16) + "-" + hex(std::get<1>(s), 16) + "(" + std::get<2>(s) +
                   ")";
        });
    }
    if (sig == "x") {
        return std::to_string(v.get<int64_t>());
    }
    if (sig == "n") {
        return std::to_string(v.get<int16_t>());
    }
    if (sig == "d") {
        return std::to_string(v.get<double>());
    }
    if (sig == "a{sb}" || sig == "a{ss}" || sig == "a{su}" || sig == "a{st}") {
        std::vector<std::pair<std::string, std::string>> items;
        if (sig == "a{sb}") {
            for (const auto& [k, b] : v.get<std::map<std::string, bool>>()) {
                items.emplace_back(k, b ? (json ? "true" : "yes") : (json ? "false" : "no"));
            }
        } else if (sig == "a{ss}") {
            for (const auto& [k, x] : v.get<std::map<std::string, std::string>>()) {
                items.emplace_back(k, q(x));
            }
        } else if (sig == "a{su}") {
            for (const auto& [k, x] : v.get<std::map<std::string, uint32_t>>()) {
                items.emplace_back(k, std::to_string(x));
            }
        } else {
            for (const auto& [k, x] : v.get<std::map<std::string, uint64_t>>()) {
                items.emplace_back(k, std::to_string(x));
            }
        }
        if (!json && items.empty()) {
            return "-";
        }
        std::string out = json ? "{" : "";
        for (size_t i = 0; i < items.size(); ++i) {
            if (json) {
                out += (i > 0 ? "," : "") + jsonString(items[i].first) + ":" + items[i].second;
            } else {
                out += (i > 0 ? " " : "") + items[i].first + "=" + items[i].second;
            }
        }
        return json ? out + "}" : out;
    }
    if (sig == "a(us)") {
        // Pasids: (pasid, device)
        using S = sdbus::Struct<uint32_t, std::string>;
        return joinList<S>(v.get<std::vector<S>>(), json, [json](const S& s) {
            if (json) {
                return "{\"pasid\":" + std::to_string(std::get<0>(s)) +
                       ",\"device\":" + jsonString(std::get<1>(s)) + "}";
            }
            return std::to_string(std::get<0>(s)) + "@" + std::get<1>(s);
        });
    }
    if (sig == "a(st)") {
        // VirtualIds: (device, guest-visible ID)
        using S = sdbus::Struct<std::string, uint64_t>;
        return joinList<S>(v.get<std::vector<S>>(), json, [json](const S& s) {
            if (json) {
                return "{\"device\":" + jsonString(std::get<0>(s)) +
                       ",\"id\":" + std::to_string(std::get<1>(s)) + "}";
            }
            return std::get<0>(s) + "=" + hex(std::get<1>(s), 1);
        });
    }
    if (sig == "a(tt)") {
        // IOVA ranges: (start, last)
        using S = sdbus::Struct<uint64_t, uint64_t>;
        return joinList<S>(v.get<std::vector<S>>(), json, [json](const S& s) {
            if (json) {
                return "{\"start\":" + std::to_string(std::get<0>(s)) +
                       ",\"last\":" + std::to_string(std::get<1>(s)) + "}";
            }
            return hex(std::get<0>(s), 1) + "-" + hex(std::get<1>(s), 1);
        });
    }
    if (sig == "a(sssuas)") {
        // Plugins: (name, version, file, ABI, kinds)
        using S = sdbus::Struct<std::string, std::string, std::string, uint32_t,
                                std::vector<std::string>>;
        const auto plugins = v.get<std::vector<S>>();
        if (!json) {
            return plugins.empty()
                       ? std::string("none: svad allows nothing")
                       : joinList<S>(plugins, false, [](const S& p) {
                             std::string kinds;
                             for (const auto& k : std::get<4>(p)) {
                                 kinds += (kinds.empty() ? "" : ",") + k;
                             }
                             return std::get<0>(p) +
                                    (std::get<1>(p).empty() ? "" : " " + std::get<1>(p)) + " (" +
                                    kinds + ")";
                         });
        }
        return joinList<S>(plugins, true, [](const S& p) {
            std::string kinds;
            for (const auto& k : std::get<4>(p)) {
                kinds += (kinds.empty() ? "" : ",") + jsonString(k);
            }
            return "{\"name\":" + jsonString(std::get<0>(p)) +
                   ",\"version\":" + jsonString(std::get<1>(p)) +
                   ",\"file\":" + jsonString(std::get<2>(p)) +
                   ",\"abi\":" + std::to_string(std::get<3>(p)) + ",\"kinds\":[" + kinds + "]}";
        });
    }
    if (sig == "a(ss)") {
        // PluginRefusals: (file, reason)
        using S = sdbus::Struct<std::string, std::string>;
        const auto refused = v.get<std::vector<S>>();
        if (!json && refused.empty()) {
            return "none";
        }
        std::string out = json ? "[" : "";
        for (size_t i = 0; i < refused.size(); ++i) {
            const auto& r = refused[i];
            out += json
                       ? std::string(i > 0 ? "," : "") + "{\"file\":" + jsonString(std::get<0>(r)) +
                             ",\"reason\":" + jsonString(std::get<1>(r)) + "}"
                       : std::string(i > 0 ? "; " : "") + std::get<0>(r) + ": " + std::get<1>(r);
        }
        return json ? out + "]" : out;
    }
    return json ? "null" : "<" + sig + ">";
}

// One property of interface `iface` as a person reads it; "?" when it is missing.
std::string prop(const Properties& p, const std::string& name, const std::string& iface = {}) {
    auto it = p.find(name);
    return it == p.end() ? std::string("?") : valueText(iface, name, it->second, false);
}

bool flag(const Properties& p, const std::string& name) {
    auto it = p.find(name);
    return it != p.end() && it->second.containsValueOfType<bool>() && it->second.get<bool>();
}

} // namespace

std::string renderTable(const std::vector<std::vector<std::string>>& rows) {
    if (rows.empty()) {
        return {};
    }
    std::vector<size_t> widths(rows[0].size(), 0);
    for (const auto& r : rows) {
        for (size_t i = 0; i < r.size() && i < widths.size(); ++i) {
            widths[i] = std::max(widths[i], r[i].size());
        }
    }
    std::string out;
    for (const auto& r : rows) {
        std::string line;
        for (size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) {
                line.append(widths[i] - r[i].size() + 2, ' ');
            }
        }
        out += line + "\n";
    }
    return out;
}

std::string renderValue(const std::string& name, const Value& v, bool json,
                        const std::string& iface) {
    return valueText(iface, name, v, json);
}

std::string renderValue(const std::string& name, const sdbus::Variant& v, bool json,
                        const std::string& iface) {
    if (std::string(v.peekValueType()) == "h") {
        // A copy of the fd, closed again right away: what it is, not its number.
        auto fd = v.get<sdbus::UnixFd>();
        const std::string target = fdTarget(fd.get());
        return json ? jsonString(target) : target;
    }
    return valueText(iface, name, Value::of(v), json);
}

std::string fdTarget(int fd) {
    char buf[PATH_MAX];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n < 0) {
        return "?";
    }
    return std::string(buf, static_cast<size_t>(n));
}

std::string renderProperties(const Properties& props, bool json, const std::string& path,
                             const std::string& iface) {
    std::string out;
    if (json) {
        out = "{";
        bool first = true;
        if (!path.empty()) {
            out += "\"ObjectPath\":" + jsonString(path);
            first = false;
        }
        for (const auto& [k, v] : props) {
            out += (first ? "" : ",") + jsonString(k) + ":" + valueText(iface, k, v, true);
            first = false;
        }
        return out + "}\n";
    }
    size_t width = 0;
    for (const auto& [k, v] : props) {
        width = std::max(width, k.size());
    }
    if (!path.empty()) {
        width = std::max(width, sizeof("ObjectPath") - 1);
        out += "ObjectPath:" + std::string(width - 10 + 1, ' ') + path + "\n";
    }
    for (const auto& [k, v] : props) {
        out +=
            k + ":" + std::string(width - k.size() + 1, ' ') + valueText(iface, k, v, false) + "\n";
    }
    return out;
}

std::string renderProperties(const VariantProperties& props, bool json, const std::string& path,
                             const std::string& iface) {
    Properties values;
    for (const auto& [k, v] : props) {
        values.emplace(k, Value::of(v));
    }
    return renderProperties(values, json, path, iface);
}

std::string listingPrefix(const std::string& what) {
    if (what == "devices") {
        return std::string(names::kDevicePrefix);
    }
    if (what == "vdpa") {
        return std::string(names::kVdpaPrefix);
    }
    if (what == "groups") {
        return std::string(names::kGroupPrefix);
    }
    if (what == "units") {
        return std::string(names::kUnitPrefix);
    }
    return std::string(names::kQueuePrefix);
}

const std::set<std::string>& listingColumns(const std::string& what) {
    static const std::map<std::string, std::set<std::string>> kColumns = {
        {"devices",
         {"Address", "VendorId", "DeviceId", "ClassCode", "Driver", "Group", "Unit", "Pasid",
          "PasidMaxWidth", "PasidExec", "PasidPriv", "Ats", "Pri", "Siov", "VfioDevice",
          "Warnings"}},
        {"vdpa", {"Address", "VdpaManagementDevice", "Driver", "ParentDevice", "VhostDevice"}},
        {"groups", {"Id", "TypeName", "Viable", "Devices", "Blockers"}},
        {"units",
         {"Name", "Kind", "ScalableMode", "Pasid", "PasidWidth", "Nesting", "PageRequest",
          "FirstLevel", "Devices"}},
        {"queues", {"Name", "Device", "IdxdDevice", "Mode", "Type", "State", "Size", "CharDevice"}},
    };
    static const std::set<std::string> kNone;
    auto it = kColumns.find(what);
    return it == kColumns.end() ? kNone : it->second;
}

std::string renderListing(const std::string& what, const Objects& objects, bool json,
                          bool pasidOnly) {
    const std::string prefix = listingPrefix(what);
    std::string iface;
    if (what == "groups") {
        iface = names::kGroupInterface;
    } else if (what == "units") {
        iface = names::kUnitInterface;
    } else if (what == "queues") {
        iface = names::kQueueInterface;
    } else {
        iface = names::kDeviceInterface;
    }

    std::vector<std::pair<std::string, const Properties*>> selected;
    for (const auto& [path, ifaces] : objects) {
        if (path.rfind(prefix, 0) != 0) {
            continue;
        }
        auto it = ifaces.find(iface);
        if (it == ifaces.end() || (pasidOnly && !flag(it->second, "Pasid"))) {
            continue;
        }
        selected.emplace_back(path, &it->second);
    }
    if (what == "groups") {
        auto id = [](const Properties* p) {
            auto it = p->find("Id");
            return it == p->end() ? 0U : it->second.get<uint32_t>();
        };
        std::sort(selected.begin(), selected.end(),
                  [&id](const auto& a, const auto& b) { return id(a.second) < id(b.second); });
    }

    if (json) {
        std::string out = "[";
        for (size_t i = 0; i < selected.size(); ++i) {
            std::string one = renderProperties(*selected[i].second, true, selected[i].first);
            one.pop_back(); // newline
            out += (i > 0 ? "," : "") + one;
        }
        return out + "]\n";
    }

    std::vector<std::vector<std::string>> rows;
    if (what == "devices") {
        rows.push_back({"ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "UNIT", "PASID", "ATS", "PRI",
                        "SIOV", "VFIO", "WARN"});
        for (const auto& [path, p] : selected) {
            std::string pasid = flag(*p, "Pasid") ? prop(*p, "PasidMaxWidth") + "b" +
                                                        (flag(*p, "PasidExec") ? "+x" : "") +
                                                        (flag(*p, "PasidPriv") ? "+p" : "")
                                                  : "-";
            auto w = p->find("Warnings");
            size_t warns = w == p->end() ? 0 : w->second.get<std::vector<std::string>>().size();
            rows.push_back({prop(*p, "Address"),
                            prop(*p, "VendorId").substr(2) + ":" + prop(*p, "DeviceId").substr(2),
                            prop(*p, "ClassCode").substr(2), orDash(prop(*p, "Driver")),
                            prop(*p, "Group"), prop(*p, "Unit"), pasid,
                            flag(*p, "Ats") ? "yes" : "-", flag(*p, "Pri") ? "yes" : "-",
                            flag(*p, "Siov") ? "yes" : "-", orDash(prop(*p, "VfioDevice")),
                            warns == 0 ? "-" : std::to_string(warns)});
        }
    } else if (what == "vdpa") {
        rows.push_back({"NAME", "MGMTDEV", "DRIVER", "PARENT", "VHOST"});
        for (const auto& [path, p] : selected) {
            rows.push_back({prop(*p, "Address"), orDash(prop(*p, "VdpaManagementDevice")),
                            orDash(prop(*p, "Driver")), prop(*p, "ParentDevice"),
                            orDash(prop(*p, "VhostDevice"))});
        }
    } else if (what == "groups") {
        rows.push_back({"GROUP", "TYPE", "VIABLE", "DEVICES", "BLOCKERS"});
        for (const auto& [path, p] : selected) {
            rows.push_back({prop(*p, "Id"), orDash(prop(*p, "TypeName")),
                            flag(*p, "Viable") ? "yes" : "no", orDash(prop(*p, "Devices")),
                            orDash(prop(*p, "Blockers"))});
        }
    } else if (what == "units") {
        rows.push_back(
            {"UNIT", "KIND", "SCALABLE", "PASID", "NESTING", "PRS", "FIRST-LEVEL", "DEVICES"});
        for (const auto& [path, p] : selected) {
            auto devs = p->find("Devices");
            size_t ndev =
                devs == p->end() ? 0 : devs->second.get<std::vector<sdbus::ObjectPath>>().size();
            rows.push_back(
                {prop(*p, "Name"), prop(*p, "Kind", iface), flag(*p, "ScalableMode") ? "yes" : "no",
                 flag(*p, "Pasid") ? prop(*p, "PasidWidth") + "b" : "-",
                 flag(*p, "Nesting") ? "yes" : "no", flag(*p, "PageRequest") ? "yes" : "no",
                 flag(*p, "FirstLevel") ? "yes" : "no", std::to_string(ndev)});
        }
    } else {
        rows.push_back({"QUEUE", "DEVICE", "IDXD", "MODE", "TYPE", "STATE", "SIZE", "CHARDEV"});
        for (const auto& [path, p] : selected) {
            rows.push_back({prop(*p, "Name"), prop(*p, "Device"), prop(*p, "IdxdDevice"),
                            prop(*p, "Mode", iface), prop(*p, "Type", iface),
                            prop(*p, "State", iface), prop(*p, "Size"), prop(*p, "CharDevice")});
        }
    }
    return renderTable(rows);
}

std::string renderContexts(const Objects& objects, bool json) {
    const std::string& prefix = kContextPrefix;
    const std::string iface(names::kContextInterface);
    std::vector<std::pair<std::string, const Properties*>> selected;
    for (const auto& [path, ifaces] : objects) {
        auto it = ifaces.find(iface);
        if (path.rfind(prefix, 0) == 0 && it != ifaces.end()) {
            selected.emplace_back(path, &it->second);
        }
    }
    // By number: context/10 after context/9.
    auto number = [&prefix](const std::string& path) {
        return std::strtoull(path.c_str() + prefix.size(), nullptr, 10);
    };
    std::sort(selected.begin(), selected.end(), [&number](const auto& a, const auto& b) {
        return number(a.first) < number(b.first);
    });

    if (json) {
        std::string out = "[";
        for (size_t i = 0; i < selected.size(); ++i) {
            std::string one = renderProperties(*selected[i].second, true, selected[i].first);
            one.pop_back(); // newline
            out += (i > 0 ? "," : "") + one;
        }
        return out + "]\n";
    }
    if (selected.empty()) {
        return "no contexts\n";
    }
    auto commas = [](std::string s) {
        std::replace(s.begin(), s.end(), ' ', ',');
        return orDash(s);
    };
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"CONTEXT", "VM", "OWNER(uid/pid)", "MODE", "STATE", "DEVICES", "PASIDS"});
    for (const auto& [path, p] : selected) {
        rows.push_back({path.substr(prefix.size()), orDash(prop(*p, "Vm")),
                        prop(*p, "OwnerUid") + "/" + prop(*p, "OwnerPid"), prop(*p, "Mode", iface),
                        prop(*p, "State", iface), commas(prop(*p, "Devices")),
                        commas(prop(*p, "Pasids"))});
    }
    return renderTable(rows);
}

std::string
renderPlugins(const std::vector<sdbus::Struct<std::string, std::string, std::string, uint32_t,
                                              std::vector<std::string>>>& plugins,
              const std::vector<sdbus::Struct<std::string, std::string>>& refused, bool json) {
    auto joinKinds = [](const std::vector<std::string>& kinds, const char* sep) {
        std::string out;
        for (const auto& k : kinds) {
            out += (out.empty() ? "" : sep) + k;
        }
        return out;
    };
    if (json) {
        std::string out = "{\"plugins\":[";
        for (size_t i = 0; i < plugins.size(); ++i) {
            const auto& p = plugins[i];
            std::string kinds;
            for (const auto& k : p.get<4>()) {
                kinds += (kinds.empty() ? "" : ",") + jsonString(k);
            }
            out += (i == 0 ? "" : ",") + std::string("{\"name\":") + jsonString(p.get<0>()) +
                   ",\"version\":" + jsonString(p.get<1>()) +
                   ",\"file\":" + jsonString(p.get<2>()) +
                   ",\"abi\":" + std::to_string(p.get<3>()) + ",\"kinds\":[" + kinds + "]}";
        }
        out += "],\"refused\":[";
        for (size_t i = 0; i < refused.size(); ++i) {
            out += (i == 0 ? "" : ",") + std::string("{\"file\":") +
                   jsonString(refused[i].get<0>()) +
                   ",\"reason\":" + jsonString(refused[i].get<1>()) + "}";
        }
        return out + "]}\n";
    }
    std::vector<std::vector<std::string>> rows = {{"NAME", "VERSION", "ABI", "KINDS", "FILE"}};
    for (const auto& p : plugins) {
        rows.push_back({p.get<0>(), p.get<1>().empty() ? "-" : p.get<1>(),
                        std::to_string(p.get<3>()), joinKinds(p.get<4>(), ","), p.get<2>()});
    }
    std::string out =
        plugins.empty() ? "no plugins loaded: svad allows nothing\n" : renderTable(rows);
    for (const auto& r : refused) {
        out += "refused: " + r.get<0>() + ": " + r.get<1>() + "\n";
    }
    return out;
}

} // namespace svad::cli
