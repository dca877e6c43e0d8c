#include "layering_scan.h"

#include <fstream>
#include <regex>

namespace svad::layering {

namespace fs = std::filesystem;

namespace {

// Outside the core: the D-Bus, Asio, udev, systemd and SQLite libraries, the
// backends, the adaptors (generated or not) and the daemon's other parts.
const std::vector<std::string> kOutsideCore = {
    "sdbus-c++/",  "boost/asio",    "libudev.h",      "systemd/",     "sqlite3.h",
    "svad/linux/", "svad/dbus/",    "svad/sim/",      "svad/metrics", "svad/plugin_host",
    "svad/cli/",   "svad/hostgen/", "svad/version.h", "prometheus/",
};
const std::vector<std::string> kGenerated = {"_adaptor.h", "_proxy.h"};

bool startsWith(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

bool standardOrPosix(const std::string& header) {
    static const std::regex kStd(
        R"(^[a-z_0-9]+(\.h)?$|^(sys|linux|asm|arpa|netinet|net)/[a-z_0-9]+\.h$)");
    return header != "libudev.h" && std::regex_match(header, kStd);
}

// Why `header` is refused in `layer`, or "".
std::string refusal(const Layer& layer, const std::string& header) {
    for (const auto& p : layer.forbiddenPrefixes) {
        if (startsWith(header, p)) {
            return "must not include " + p;
        }
    }
    for (const auto& s : layer.forbiddenSubstrings) {
        if (header.find(s) != std::string::npos) {
            return "must not include generated " + s;
        }
    }
    if (layer.allowListOnly) {
        for (const auto& a : layer.allowed) {
            if (header == a) {
                return "";
            }
        }
        if (!standardOrPosix(header)) {
            return "may include only api/, plugins/common and the standard library";
        }
    }
    return "";
}

} // namespace

std::vector<Layer> svadLayers() {
    std::vector<Layer> out;
    out.push_back({"core", {"svad/core", "svad/ports"}, kOutsideCore, kGenerated, false, {}});
    std::vector<std::string> sim;
    for (const auto& p : kOutsideCore) {
        if (p != "svad/sim/") {
            sim.push_back(p);
        }
    }
    out.push_back({"sim", {"svad/sim"}, sim, kGenerated, false, {}});
    out.push_back({"plugins",
                   {"plugins"},
                   kOutsideCore,
                   kGenerated,
                   true,
                   {"svad/plugin.h", "svad/names.h", "plugin_util.h"}});
    return out;
}

std::vector<std::string> violations(const fs::path& root, const std::vector<Layer>& layers) {
    static const std::regex kInclude(R"(^\s*#\s*include\s*[<"]([^>"]+)[>"])");
    std::vector<std::string> out;
    for (const auto& layer : layers) {
        for (const auto& dir : layer.dirs) {
            if (!fs::is_directory(root / dir)) {
                continue;
            }
            for (const auto& e : fs::recursive_directory_iterator(root / dir)) {
                const auto ext = e.path().extension();
                if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h")) {
                    continue;
                }
                std::ifstream in(e.path());
                std::string line;
                for (int n = 1; std::getline(in, line); ++n) {
                    std::smatch m;
                    if (!std::regex_search(line, m, kInclude)) {
                        continue;
                    }
                    if (auto why = refusal(layer, m[1].str()); !why.empty()) {
                        out.push_back(fs::relative(e.path(), root).string() + ":" +
                                      std::to_string(n) + ": <" + m[1].str() + "> (" + layer.name +
                                      ": " + why + ")");
                    }
                }
            }
        }
    }
    return out;
}

} // namespace svad::layering
