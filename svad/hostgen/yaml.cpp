// Loading a YAML host description (config/hosts/README.md documents the format).
#include "svad/hostgen/hostgen.h"
#include "svad/hostgen/internal.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>
#include <yaml-cpp/yaml.h>

namespace svad::hostgen {

namespace {

using Keys = std::initializer_list<const char*>;

std::string joinKeys(Keys keys) {
    std::string out;
    for (const char* k : keys) {
        if (!out.empty()) {
            out += ", ";
        }
        out += k;
    }
    return out;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

class Loader {
public:
    explicit Loader(std::string file) : file_(std::move(file)) {}

    HostSpec load(const YAML::Node& root) {
        HostSpec host;
        if (root.IsNull()) {
            throw HostgenError(file_ + ": empty host description (expected a mapping with units, "
                                       "groups and devices)");
        }
        fields(root, "host", "", {"name", "units", "groups", "devices", "software_vdpa"},
               [&](const std::string& key, const YAML::Node& v, const std::string& p) {
                   if (key == "name") {
                       host.name = str(v);
                   } else if (key == "units") {
                       list(v, p, [&](const YAML::Node& n, const std::string& ip) {
                           host.units.push_back(unit(n, ip));
                       });
                   } else if (key == "groups") {
                       list(v, p, [&](const YAML::Node& n, const std::string& ip) {
                           host.groups.push_back(group(n, ip));
                       });
                   } else if (key == "devices") {
                       list(v, p, [&](const YAML::Node& n, const std::string& ip) {
                           host.devices.push_back(device(n, ip));
                       });
                   } else if (key == "software_vdpa") {
                       list(v, p, [&](const YAML::Node& n, const std::string& ip) {
                           host.softwareVdpa.push_back(vdpa(n, ip, true));
                       });
                   }
               });
        detail::validateHostAt(host, [this](const std::string& path) { return locate(path); });
        return host;
    }

private:
    std::string at(const YAML::Mark& m) const {
        if (m.is_null()) {
            return file_ + ": ";
        }
        return file_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": ";
    }

    [[noreturn]] void fail(const YAML::Node& n, const std::string& what) const {
        throw HostgenError(at(n.Mark()) + what);
    }

    // The nearest recorded location of `path` ("devices[3].sriov.vfs[0].vfio").
    std::string locate(std::string path) const {
        while (true) {
            auto it = marks_.find(path);
            if (it != marks_.end()) {
                return at(it->second);
            }
            auto cut = path.find_last_of(".[");
            if (cut == std::string::npos || cut == 0) {
                return file_ + ": ";
            }
            path.resize(cut);
        }
    }

    template <typename F>
    void fields(const YAML::Node& map, const char* what, const std::string& path, Keys allowed,
                F&& onKey) {
        if (!map.IsMap()) {
            fail(map, "expected a mapping for " + std::string(what));
        }
        if (!path.empty()) {
            marks_.emplace(path, map.Mark());
        }
        std::set<std::string> seen;
        for (auto it = map.begin(); it != map.end(); ++it) {
            // A copy: yaml-cpp's iterator hands out a temporary, and a reference
            // to its member dangles after this line.
            const YAML::Node k = it->first;
            if (!k.IsScalar()) {
                fail(k, "expected a key name in " + std::string(what));
            }
            const std::string key = k.Scalar();
            if (std::find_if(allowed.begin(), allowed.end(),
                             [&](const char* a) { return key == a; }) == allowed.end()) {
                fail(k, "unknown key '" + key + "' in " + what +
                            " (expected one of: " + joinKeys(allowed) + ")");
            }
            if (!seen.insert(key).second) {
                fail(k, "duplicate key '" + key + "' in " + what);
            }
            if (it->second.IsNull()) {
                fail(k, "'" + key + "' has no value");
            }
            const std::string sub = path.empty() ? key : path + "." + key;
            marks_.emplace(sub, it->second.Mark());
            onKey(key, it->second, sub);
        }
    }

    template <typename F> void list(const YAML::Node& seq, const std::string& path, F&& onItem) {
        if (!seq.IsSequence()) {
            fail(seq, "expected a list for " + path);
        }
        for (size_t i = 0; i < seq.size(); ++i) {
            const std::string ip = path + "[" + std::to_string(i) + "]";
            marks_.emplace(ip, seq[i].Mark());
            onItem(seq[i], ip);
        }
    }

    std::string str(const YAML::Node& n) const {
        if (!n.IsScalar()) {
            fail(n, "expected a string");
        }
        const std::string& s = n.Scalar();
        if (s.find('\n') != std::string::npos) {
            fail(n, "expected a single-line string");
        }
        return s;
    }

    bool boolean(const YAML::Node& n) const {
        if (n.IsScalar()) {
            const std::string s = lower(n.Scalar());
            if (s == "true" || s == "yes" || s == "on") {
                return true;
            }
            if (s == "false" || s == "no" || s == "off") {
                return false;
            }
        }
        fail(n, "expected true or false");
    }

    // A decimal or 0x-hexadecimal integer in [min, max].
    int64_t number(const YAML::Node& n, int64_t min, uint64_t max, const char* what) const {
        auto bad = [&]() -> int64_t {
            std::ostringstream o;
            o << "expected " << what << " (a number " << min << ".." << max
              << ", decimal or 0x-hex)";
            fail(n, o.str());
        };
        if (!n.IsScalar()) {
            bad();
        }
        std::string s = n.Scalar();
        bool neg = false;
        if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
            neg = s[0] == '-';
            s.erase(0, 1);
        }
        int base = 10;
        if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
            base = 16;
            s.erase(0, 2);
        }
        if (s.empty() || s.size() > 20) {
            bad();
        }
        uint64_t v = 0;
        for (char c : s) {
            int d = -1;
            if (c >= '0' && c <= '9') {
                d = c - '0';
            } else if (base == 16 && c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            } else if (base == 16 && c >= 'A' && c <= 'F') {
                d = c - 'A' + 10;
            }
            if (d < 0) {
                bad();
            }
            if (v > (UINT64_MAX - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base)) {
                bad();
            }
            v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
        }
        if (neg) {
            if (v == 0) {
                return 0;
            }
            if (min >= 0 || v > static_cast<uint64_t>(-(min + 1)) + 1) {
                bad();
            }
            return -static_cast<int64_t>(v - 1) - 1;
        }
        if (v > max || static_cast<int64_t>(v) < min) {
            bad();
        }
        return static_cast<int64_t>(v);
    }

    uint64_t u64(const YAML::Node& n, const char* what) const {
        // number() returns int64_t; 64-bit registers need the full range.
        if (n.IsScalar()) {
            std::string s = n.Scalar();
            if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && s.size() <= 18 &&
                std::all_of(s.begin() + 2, s.end(), [](char c) { return std::isxdigit(c); })) {
                return std::stoull(s.substr(2), nullptr, 16);
            }
        }
        return static_cast<uint64_t>(number(n, 0, INT64_MAX, what));
    }

    uint16_t u16(const YAML::Node& n, const char* what) const {
        return static_cast<uint16_t>(number(n, 0, 0xffff, what));
    }

    std::string address(const YAML::Node& n) const {
        auto a = detail::parseAddress(str(n));
        if (!a) {
            fail(n, "expected a PCI address DDDD:BB:DD.F (e.g. 0000:6a:01.0), got '" + n.Scalar() +
                        "'");
        }
        return detail::formatAddress(*a);
    }

    UnitSpec unit(const YAML::Node& n, const std::string& p) {
        UnitSpec u;
        bool named = false;
        fields(n, "unit", p, {"name", "cap", "ecap", "version"},
               [&](const std::string& key, const YAML::Node& v, const std::string&) {
                   if (key == "name") {
                       u.name = str(v);
                       named = true;
                   } else if (key == "cap") {
                       u.cap = u64(v, "a 64-bit CAP_REG value");
                   } else if (key == "ecap") {
                       u.ecap = u64(v, "a 64-bit ECAP_REG value");
                   } else if (key == "version") {
                       u.version = str(v);
                   }
               });
        if (!named) {
            fail(n, "unit needs a name (e.g. name: dmar0)");
        }
        return u;
    }

    GroupSpec group(const YAML::Node& n, const std::string& p) {
        GroupSpec g;
        bool hasId = false;
        fields(n, "group", p, {"id", "type", "reserved_regions"},
               [&](const std::string& key, const YAML::Node& v, const std::string& kp) {
                   if (key == "id") {
                       g.id = static_cast<uint32_t>(number(v, 0, UINT32_MAX, "a group number"));
                       hasId = true;
                   } else if (key == "type") {
                       g.type = str(v);
                   } else if (key == "reserved_regions") {
                       list(v, kp, [&](const YAML::Node& r, const std::string&) {
                           g.reservedRegions.push_back(str(r));
                       });
                   }
               });
        if (!hasId) {
            fail(n, "group needs an id");
        }
        return g;
    }

    PasidSpec pasid(const YAML::Node& n, const std::string& p) {
        PasidSpec ps;
        fields(n, "pasid", p, {"width", "exec", "priv"},
               [&](const std::string& key, const YAML::Node& v, const std::string&) {
                   if (key == "width") {
                       ps.width = static_cast<uint32_t>(number(v, 1, 20, "a PASID width in bits"));
                   } else if (key == "exec") {
                       ps.exec = boolean(v);
                   } else if (key == "priv") {
                       ps.priv = boolean(v);
                   }
               });
        return ps;
    }

    VdpaSpec vdpa(const YAML::Node& n, const std::string& p, bool software) {
        VdpaSpec v;
        bool named = false;
        auto onKey = [&](const std::string& key, const YAML::Node& val, const std::string&) {
            if (key == "name") {
                v.name = str(val);
                named = true;
            } else if (key == "driver") {
                v.driver = str(val);
            } else if (key == "mgmtdev") {
                v.mgmtdev = str(val);
            }
        };
        if (software) {
            v.mgmtdev = "vdpasim_net";
            fields(n, "software_vdpa device", p, {"name", "driver", "mgmtdev"}, onKey);
        } else {
            fields(n, "vdpa device", p, {"name", "driver"}, onKey);
        }
        if (!named) {
            fail(n, "vDPA device needs a name (e.g. name: vdpa0)");
        }
        return v;
    }

    QueueSpec queue(const YAML::Node& n, const std::string& p) {
        QueueSpec q;
        bool named = false;
        bool charDev = false;
        fields(n, "queue", p,
               {"name", "mode", "type", "state", "size", "group_id", "wq_name", "char_device",
                "priority", "threshold"},
               [&](const std::string& key, const YAML::Node& v, const std::string&) {
                   if (key == "name") {
                       q.name = str(v);
                       named = true;
                   } else if (key == "mode") {
                       q.mode = str(v);
                   } else if (key == "type") {
                       q.type = str(v);
                   } else if (key == "state") {
                       q.state = str(v);
                   } else if (key == "size") {
                       q.size = static_cast<uint32_t>(number(v, 0, 65535, "a queue size"));
                   } else if (key == "group_id") {
                       q.groupId = static_cast<int32_t>(number(v, -1, 255, "an idxd group id"));
                   } else if (key == "wq_name") {
                       q.wqName = str(v);
                   } else if (key == "char_device") {
                       q.charDevice = boolean(v);
                       charDev = true;
                   } else if (key == "priority") {
                       q.priority = static_cast<uint32_t>(number(v, 1, 15, "a queue priority"));
                   } else if (key == "threshold") {
                       q.threshold = static_cast<uint32_t>(number(v, 0, 65535, "a threshold"));
                   }
               });
        if (!named) {
            fail(n, "queue needs a name (e.g. name: wq0.0)");
        }
        if (!charDev) {
            // The idxd driver makes /dev/dsa/wqK.Q for enabled user queues.
            q.charDevice = q.type == "user" && q.state == "enabled";
        }
        return q;
    }

    VfSpec vf(const YAML::Node& n, const std::string& p) {
        VfSpec v;
        bool indexed = false;
        fields(n, "vf", p, {"index", "driver", "driver_override", "vfio", "vdpa"},
               [&](const std::string& key, const YAML::Node& val, const std::string& kp) {
                   if (key == "index") {
                       v.index = u16(val, "a VF index");
                       indexed = true;
                   } else if (key == "driver") {
                       v.driver = str(val);
                   } else if (key == "driver_override") {
                       v.driverOverride = str(val);
                   } else if (key == "vfio") {
                       v.vfio = static_cast<uint32_t>(
                           number(val, 0, UINT32_MAX, "a VFIO cdev number (vfio<N>)"));
                   } else if (key == "vdpa") {
                       list(val, kp, [&](const YAML::Node& e, const std::string& ep) {
                           v.vdpa.push_back(vdpa(e, ep, false));
                       });
                   }
               });
        if (!indexed) {
            fail(n, "vf needs an index");
        }
        return v;
    }

    SriovSpec sriov(const YAML::Node& n, const std::string& p) {
        SriovSpec s;
        fields(n, "sriov", p,
               {"total_vfs", "num_vfs", "vf_device", "vf_driver", "first_vf_offset", "vf_stride",
                "vfs"},
               [&](const std::string& key, const YAML::Node& v, const std::string& kp) {
                   if (key == "total_vfs") {
                       s.totalVfs = u16(v, "a VF count");
                   } else if (key == "num_vfs") {
                       s.numVfs = u16(v, "a VF count");
                   } else if (key == "vf_device") {
                       s.vfDevice = u16(v, "a 16-bit device id");
                   } else if (key == "vf_driver") {
                       s.vfDriver = str(v);
                   } else if (key == "first_vf_offset") {
                       s.firstVfOffset = u16(v, "a routing-ID offset");
                   } else if (key == "vf_stride") {
                       s.vfStride = u16(v, "a routing-ID stride");
                   } else if (key == "vfs") {
                       list(v, kp, [&](const YAML::Node& e, const std::string& ep) {
                           s.vfs.push_back(vf(e, ep));
                       });
                   }
               });
        return s;
    }

    DeviceSpec device(const YAML::Node& n, const std::string& p) {
        DeviceSpec d;
        bool addressed = false;
        bool hasDevice = false;
        fields(n, "device", p,
               {"address",
                "vendor",
                "device",
                "subsystem_vendor",
                "subsystem_device",
                "class",
                "revision",
                "driver",
                "driver_override",
                "numa_node",
                "group",
                "iommu",
                "vfio",
                "pasid",
                "ats",
                "pri",
                "acs",
                "siov",
                "sriov",
                "config_size",
                "idxd",
                "queues",
                "vdpa"},
               [&](const std::string& key, const YAML::Node& v, const std::string& kp) {
                   if (key == "address") {
                       d.address = address(v);
                       addressed = true;
                   } else if (key == "vendor") {
                       d.vendor = u16(v, "a 16-bit vendor id");
                   } else if (key == "device") {
                       d.device = u16(v, "a 16-bit device id");
                       hasDevice = true;
                   } else if (key == "subsystem_vendor") {
                       d.subsystemVendor = u16(v, "a 16-bit subsystem vendor id");
                   } else if (key == "subsystem_device") {
                       d.subsystemDevice = u16(v, "a 16-bit subsystem device id");
                   } else if (key == "class") {
                       d.classCode = static_cast<uint32_t>(
                           number(v, 0, 0xffffff, "a 24-bit class code (e.g. 0x088000)"));
                   } else if (key == "revision") {
                       d.revision = static_cast<uint8_t>(number(v, 0, 0xff, "an 8-bit revision"));
                   } else if (key == "driver") {
                       d.driver = str(v);
                   } else if (key == "driver_override") {
                       d.driverOverride = str(v);
                   } else if (key == "numa_node") {
                       d.numaNode = static_cast<int32_t>(number(v, -1, 1023, "a NUMA node"));
                   } else if (key == "group") {
                       d.group = static_cast<uint32_t>(number(v, 0, UINT32_MAX, "a group number"));
                   } else if (key == "iommu") {
                       d.iommu = str(v);
                   } else if (key == "vfio") {
                       d.vfio = static_cast<uint32_t>(
                           number(v, 0, UINT32_MAX, "a VFIO cdev number (vfio<N>)"));
                   } else if (key == "pasid") {
                       if (v.IsMap()) {
                           d.pasid = pasid(v, kp);
                       } else if (boolean(v)) {
                           d.pasid = PasidSpec{};
                       }
                   } else if (key == "ats") {
                       d.ats = boolean(v);
                   } else if (key == "pri") {
                       d.pri = boolean(v);
                   } else if (key == "acs") {
                       d.acs = boolean(v);
                   } else if (key == "siov") {
                       d.siov = boolean(v);
                   } else if (key == "sriov") {
                       d.sriov = sriov(v, kp);
                   } else if (key == "config_size") {
                       d.configSize = static_cast<uint32_t>(
                           number(v, 64, 4096, "a config size (64, 256, 4096)"));
                   } else if (key == "idxd") {
                       d.idxdName = str(v);
                   } else if (key == "queues") {
                       list(v, kp, [&](const YAML::Node& e, const std::string& ep) {
                           d.queues.push_back(queue(e, ep));
                       });
                   } else if (key == "vdpa") {
                       list(v, kp, [&](const YAML::Node& e, const std::string& ep) {
                           d.vdpa.push_back(vdpa(e, ep, false));
                       });
                   }
               });
        if (!addressed) {
            fail(n, "device needs an address (e.g. address: 0000:6a:01.0)");
        }
        if (!hasDevice) {
            fail(n, "device " + d.address + " needs a device id (e.g. device: 0x0b25)");
        }
        return d;
    }

    std::string file_;
    std::unordered_map<std::string, YAML::Mark> marks_;
};

} // namespace

HostSpec loadHostYaml(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw HostgenError(path + ": cannot open: " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parseHostYaml(text.str(), path);
}

HostSpec parseHostYaml(const std::string& text, const std::string& name) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
        throw HostgenError(name + ":" + std::to_string(e.mark.line + 1) + ":" +
                           std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
    }
    try {
        return Loader(name).load(root);
    } catch (const YAML::Exception& e) {
        throw HostgenError(name + ":" + std::to_string(e.mark.line + 1) + ":" +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
}

} // namespace svad::hostgen
