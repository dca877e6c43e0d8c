#include "lspci_oracle.h"

#include <array>
#include <cstdio>
#include <regex>
#include <sstream>
#include <sys/wait.h>

namespace svad::conformance {
namespace {

enum class Kind { Other, Pasid, Ats, Pri, Acs, Sriov };

bool flag(const std::string& sign) {
    return sign == "+";
}

uint32_t hexValue(const std::string& s) {
    return static_cast<uint32_t>(std::stoul(s, nullptr, 16));
}

uint16_t decValue(const std::string& s) {
    return static_cast<uint16_t>(std::stoul(s, nullptr, 10));
}

// The seven ACS flags in lspci's order are bits 0..6 of ACSCap/ACSCtl.
uint16_t acsBits(const std::string& flags) {
    static const std::array<const char*, 7> names = {"SrcValid",   "TransBlk",    "ReqRedir",
                                                     "CmpltRedir", "UpstreamFwd", "EgressCtrl",
                                                     "DirectTrans"};
    uint16_t bits = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        const std::string on = std::string(names[i]) + "+";
        if (flags.find(on) != std::string::npos) {
            bits |= static_cast<uint16_t>(1u << i);
        }
    }
    return bits;
}

} // namespace

std::map<std::string, LspciDevice> parseLspci(const std::string& text) {
    static const std::regex capLine(R"(^\tCapabilities: \[([0-9a-f]+)(?: v([0-9]+))?\] (.*)$)");
    static const std::regex pasidCap(
        R"(PASIDCap: Exec([+-]),? Priv([+-]), Max PASID Width: ([0-9a-fA-F]+))");
    static const std::regex atsCap(R"(ATSCap:\s*Invalidate Queue Depth: ([0-9a-fA-F]+))");
    static const std::regex atsCtl(
        R"(ATSCtl:\s*Enable([+-]), Smallest Translation Unit: ([0-9a-fA-F]+))");
    static const std::regex priCtl(R"(PRICtl: Enable([+-]))");
    static const std::regex priCapacity(R"(Page Request Capacity: ([0-9a-fA-F]+))");
    static const std::regex acsCap(R"(ACSCap:\s*(.*)$)");
    static const std::regex acsCtl(R"(ACSCtl:\s*(.*)$)");
    static const std::regex sriovVfs(
        R"(Initial VFs: ([0-9]+), Total VFs: ([0-9]+), Number of VFs: ([0-9]+))");
    static const std::regex sriovOffset(
        R"(VF offset: ([0-9]+), stride: ([0-9]+), Device ID: ([0-9a-fA-F]+))");
    static const std::regex dvsec(
        R"(Designated Vendor-Specific: Vendor=([0-9a-fA-F]+) ID=([0-9a-fA-F]+) Rev=([0-9]+))");

    std::map<std::string, LspciDevice> devices;
    LspciDevice* cur = nullptr;
    Kind kind = Kind::Other;
    std::istringstream in(text);
    std::string line;
    std::smatch m;
    while (std::getline(in, line)) {
        if (line.empty()) {
            continue;
        }
        if (line[0] != '\t' && line[0] != ' ') {
            const std::string address = line.substr(0, line.find(' '));
            cur = &devices[address];
            cur->address = address;
            kind = Kind::Other;
            continue;
        }
        if (cur == nullptr) {
            continue;
        }
        if (std::regex_match(line, m, capLine)) {
            kind = Kind::Other;
            const std::string rest = m[3];
            if (rest.rfind("<chain looped>", 0) == 0 || rest.rfind("<chain broken>", 0) == 0) {
                continue;
            }
            const auto offset = static_cast<uint16_t>(hexValue(m[1]));
            if (!m[2].matched) {
                ++cur->standardCount;
                continue;
            }
            cur->extended.emplace_back(offset, static_cast<uint8_t>(std::stoul(m[2])));
            auto claim = [&](bool& seen, Kind k) {
                if (!seen) {
                    seen = true;
                    kind = k;
                }
            };
            if (rest.rfind("Process Address Space ID (PASID)", 0) == 0) {
                claim(cur->pasid, Kind::Pasid);
            } else if (rest.rfind("Address Translation Service (ATS)", 0) == 0) {
                claim(cur->ats, Kind::Ats);
            } else if (rest.rfind("Page Request Interface (PRI)", 0) == 0) {
                claim(cur->pri, Kind::Pri);
            } else if (rest.rfind("Access Control Services", 0) == 0) {
                claim(cur->acs, Kind::Acs);
            } else if (rest.rfind("Single Root I/O Virtualization (SR-IOV)", 0) == 0) {
                claim(cur->sriov, Kind::Sriov);
            } else if (std::regex_search(rest, m, dvsec)) {
                cur->dvsecs.push_back({offset, static_cast<uint16_t>(hexValue(m[1])),
                                       static_cast<uint16_t>(hexValue(m[2])),
                                       static_cast<uint8_t>(std::stoul(m[3]))});
            }
            continue;
        }
        switch (kind) {
        case Kind::Pasid:
            if (std::regex_search(line, m, pasidCap)) {
                cur->pasidExec = flag(m[1]);
                cur->pasidPriv = flag(m[2]);
                cur->pasidMaxWidth = hexValue(m[3]);
            }
            break;
        case Kind::Ats:
            if (std::regex_search(line, m, atsCap)) {
                cur->atsInvalidateQueueDepth = hexValue(m[1]);
            } else if (std::regex_search(line, m, atsCtl)) {
                cur->atsEnabled = flag(m[1]);
                cur->atsSmallestTranslationUnit = hexValue(m[2]);
            }
            break;
        case Kind::Pri:
            if (std::regex_search(line, m, priCtl)) {
                cur->priEnabled = flag(m[1]);
            } else if (std::regex_search(line, m, priCapacity)) {
                cur->priCapacity = hexValue(m[1]);
            }
            break;
        case Kind::Acs:
            if (std::regex_search(line, m, acsCap)) {
                cur->acsCapability = acsBits(m[1]);
            } else if (std::regex_search(line, m, acsCtl)) {
                cur->acsControl = acsBits(m[1]);
            }
            break;
        case Kind::Sriov:
            if (std::regex_search(line, m, sriovVfs)) {
                cur->sriovInitialVfs = decValue(m[1]);
                cur->sriovTotalVfs = decValue(m[2]);
                cur->sriovNumVfs = decValue(m[3]);
            } else if (std::regex_search(line, m, sriovOffset)) {
                cur->sriovFirstVfOffset = decValue(m[1]);
                cur->sriovVfStride = decValue(m[2]);
                cur->sriovVfDeviceId = static_cast<uint16_t>(hexValue(m[3]));
            }
            break;
        case Kind::Other:
            break;
        }
    }
    return devices;
}

std::optional<std::string> runLspci(const std::string& dumpPath) {
    std::string quoted = "'";
    for (char c : dumpPath) {
        if (c == '\'') {
            quoted += "'\\''";
        } else {
            quoted += c;
        }
    }
    quoted += "'";
    const std::string cmd = "LC_ALL=C lspci -F " + quoted + " -vvv -D 2>/dev/null";
    FILE* pipe = popen(cmd.c_str(), "r");
    if (pipe == nullptr) {
        return std::nullopt;
    }
    std::string out;
    std::array<char, 4096> buf{};
    size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
        out.append(buf.data(), n);
    }
    const int status = pclose(pipe);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return std::nullopt;
    }
    return out;
}

} // namespace svad::conformance
