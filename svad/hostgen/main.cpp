// svad-hostgen: writes a sysfs-like tree (and /dev placeholders) for a host
// described in YAML, synthesized, or imported from an lspci dump.
#include "svad/hostgen/hostgen.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace hg = svad::hostgen;
namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "Usage: svad-hostgen (--host FILE.yaml | --functions N [--seed S] | --lspci-dump FILE)\n"
    "                    --out DIR [--force]\n"
    "\n"
    "Writes DIR/sys and DIR/dev: a sysfs-like tree of IOMMU units, groups, PCI\n"
    "functions (with config spaces), SR-IOV VFs, idxd work queues and vDPA devices.\n"
    "\n"
    "  --host FILE        a YAML host description (see config/hosts/README.md)\n"
    "  --functions N      a synthetic host of exactly N PCI functions (VFs included)\n"
    "  --seed S           seed of the synthetic host (default 1)\n"
    "  --lspci-dump FILE  one function per device of a pciutils dump (lspci -xxxx),\n"
    "                     its configuration space as dumped, its own IOMMU group each\n"
    "  --out DIR          where to write; must not exist or be empty\n"
    "  --force            replace DIR if it holds an earlier tree (only sys/ and dev/)\n"
    "  --help             this text\n";

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

uint64_t parseCount(const std::string& opt, const std::string& text, uint64_t max) {
    if (text.empty() || text.size() > 20 ||
        text.find_first_not_of("0123456789") != std::string::npos) {
        throw UsageError(opt + " expects a non-negative decimal number, got '" + text + "'");
    }
    errno = 0;
    unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
    if (errno != 0 || v > max) {
        throw UsageError(opt + " " + text + " is out of range (at most " + std::to_string(max) +
                         ")");
    }
    return v;
}

hg::HostSpec fromDump(const std::string& path) {
    auto devices = hg::readLspciDump(path);
    if (devices.empty()) {
        throw hg::HostgenError(path + ": no devices found (expected lspci -xxx/-xxxx output)");
    }
    hg::HostSpec host;
    host.name = fs::path(path).filename().string();
    uint32_t group = 0;
    for (auto& d : devices) {
        hg::DeviceSpec spec;
        spec.address = d.address;
        const auto& c = d.config;
        auto at16 = [&c](size_t off) -> uint16_t {
            return off + 1 < c.size() ? static_cast<uint16_t>(c[off] | c[off + 1] << 8) : 0;
        };
        spec.vendor = at16(0x00);
        spec.device = at16(0x02);
        spec.revision = c.size() > 8 ? c[8] : 0;
        spec.classCode =
            c.size() > 0x0b ? static_cast<uint32_t>(c[0x09] | c[0x0a] << 8 | c[0x0b] << 16) : 0;
        if (c.size() > 0x0e && (c[0x0e] & 0x7f) == 0) { // type-0 header: subsystem ids
            spec.subsystemVendor = at16(0x2c);
            spec.subsystemDevice = at16(0x2e);
        }
        spec.configSize = static_cast<uint32_t>(c.size());
        spec.rawConfig = std::move(d.config);
        hg::GroupSpec g;
        g.id = group++;
        g.reservedRegions.push_back("0x00000000fee00000 0x00000000feefffff msi");
        spec.group = g.id;
        host.groups.push_back(std::move(g));
        for (const auto& other : host.devices) {
            if (other.address == spec.address) {
                throw hg::HostgenError(path + ": device " + spec.address + " is dumped twice");
            }
        }
        host.devices.push_back(std::move(spec));
    }
    return host;
}

// With --force: remove DIR only if it looks like an earlier tree.
void clearOut(const std::string& out) {
    std::error_code ec;
    if (!fs::exists(out, ec)) {
        return;
    }
    if (!fs::is_directory(out, ec)) {
        throw hg::HostgenError(out + ": exists and is not a directory; not replacing it");
    }
    for (const auto& e : fs::directory_iterator(out)) {
        const auto name = e.path().filename().string();
        if (name != "sys" && name != "dev") {
            throw hg::HostgenError(out + ": holds '" + name +
                                   "', not only sys/ and dev/; not replacing it");
        }
    }
    fs::remove_all(fs::path(out) / "sys");
    fs::remove_all(fs::path(out) / "dev");
}

int run(int argc, char** argv) {
    std::string hostFile, dumpFile, out;
    std::optional<uint64_t> functions;
    std::optional<uint64_t> seed;
    bool force = false;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) {
                throw UsageError(a + " needs a value");
            }
            return args[++i];
        };
        if (a == "--help" || a == "-h") {
            (void)std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--host") {
            hostFile = value();
        } else if (a == "--functions") {
            functions = parseCount(a, value(), 1u << 20);
        } else if (a == "--seed") {
            seed = parseCount(a, value(), UINT64_MAX);
        } else if (a == "--lspci-dump") {
            dumpFile = value();
        } else if (a == "--out") {
            out = value();
        } else if (a == "--force") {
            force = true;
        } else {
            throw UsageError("unknown argument '" + a + "'");
        }
    }
    const int sources = !hostFile.empty() + functions.has_value() + !dumpFile.empty();
    if (sources != 1) {
        throw UsageError("give exactly one of --host, --functions, --lspci-dump");
    }
    if (seed && !functions) {
        throw UsageError("--seed goes with --functions");
    }
    if (out.empty()) {
        throw UsageError("--out DIR is required");
    }

    const auto start = std::chrono::steady_clock::now();
    hg::HostSpec host;
    if (!hostFile.empty()) {
        host = hg::loadHostYaml(hostFile);
    } else if (functions) {
        host = hg::synthesize(static_cast<uint32_t>(*functions), seed.value_or(1));
    } else {
        host = fromDump(dumpFile);
    }
    hg::validateHost(host);
    if (force) {
        clearOut(out);
    }
    hg::writeTree(host, out);
    const auto stats = hg::statsOf(hg::expandHost(host));
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %zu functions, %zu groups, %zu units, %zu queues, %zu vdpa (%.0f ms)\n",
                out.c_str(), stats.functions, stats.groups, stats.units, stats.queues, stats.vdpa,
                ms);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const UsageError& e) {
        (void)std::fprintf(stderr, "svad-hostgen: %s (see --help)\n", e.what());
    } catch (const std::exception& e) {
        (void)std::fprintf(stderr, "svad-hostgen: %s\n", e.what());
    }
    return 1;
}
