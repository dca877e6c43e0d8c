// Reading pciutils dump files (the format `lspci -F FILE` reads, lib/dump.c):
// a line "BB:DD.F ..." or "DDDD:BB:DD.F ..." starts a device, an empty line
// ends it, and "OFF: xx xx ..." lines inside it carry configuration bytes.
// Everything else (the -vvv text) is skipped, as lspci skips it.
#include "svad/hostgen/hostgen.h"
#include "svad/hostgen/internal.h"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace svad::hostgen {

namespace {

bool isHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

unsigned hexValue(char c) {
    if (c >= '0' && c <= '9') {
        return static_cast<unsigned>(c - '0');
    }
    if (c >= 'a' && c <= 'f') {
        return static_cast<unsigned>(c - 'a' + 10);
    }
    return static_cast<unsigned>(c - 'A' + 10);
}

// pciutils' dump_validate: '#' matches a hex digit, anything else itself.
bool matches(const std::string& s, const char* fmt) {
    size_t i = 0;
    for (; fmt[i] != 0; ++i) {
        if (i >= s.size()) {
            return false;
        }
        if (fmt[i] == '#' ? !isHex(s[i]) : fmt[i] != s[i]) {
            return false;
        }
    }
    return true;
}

unsigned hexAt(const std::string& s, size_t pos, size_t len) {
    unsigned v = 0;
    for (size_t i = 0; i < len; ++i) {
        v = v << 4 | hexValue(s[pos + i]);
    }
    return v;
}

// A device header line: its normalized address, or nothing.
std::optional<std::string> headerAddress(const std::string& s) {
    detail::PciAddr a;
    size_t at = 0;
    if (matches(s, "####:##:##.# ")) {
        a.domain = static_cast<uint16_t>(hexAt(s, 0, 4));
        at = 5;
    } else if (!matches(s, "##:##.# ")) {
        return std::nullopt;
    }
    unsigned dev = hexAt(s, at + 3, 2);
    char fn = s[at + 6];
    if (dev > 0x1f || fn < '0' || fn > '7') {
        return std::nullopt;
    }
    a.bus = static_cast<uint8_t>(hexAt(s, at, 2));
    a.dev = static_cast<uint8_t>(dev);
    a.fn = static_cast<uint8_t>(fn - '0');
    return detail::formatAddress(a);
}

// The offset of a hex line ("0f0: ..."): 2 to 8 hex digits, then ": ".
std::optional<size_t> hexLineOffset(const std::string& s, size_t& dataStart) {
    size_t n = 0;
    while (n < s.size() && n < 9 && isHex(s[n])) {
        ++n;
    }
    if (n < 2 || n > 8 || s.compare(n, 2, ": ") != 0) {
        return std::nullopt;
    }
    dataStart = n + 2;
    return hexAt(s, 0, n);
}

size_t roundSize(size_t end) {
    if (end <= 64) {
        return 64;
    }
    if (end <= 256) {
        return 256;
    }
    return 4096;
}

} // namespace

std::vector<DumpedDevice> readLspciDump(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw HostgenError(path + ": cannot open: " + std::strerror(errno));
    }
    std::vector<DumpedDevice> out;
    std::vector<size_t> ends; // bytes seen per device
    bool inDevice = false;
    std::string s;
    size_t lineNo = 0;
    while (std::getline(in, s)) {
        ++lineNo;
        if (!s.empty() && s.back() == '\r') {
            s.pop_back();
        }
        if (auto addr = headerAddress(s)) {
            out.push_back(DumpedDevice{*addr, std::vector<uint8_t>(4096, 0)});
            ends.push_back(0);
            inDevice = true;
            continue;
        }
        if (s.empty()) {
            inDevice = false;
            continue;
        }
        size_t z = 0;
        std::optional<size_t> off;
        if (!inDevice || !(off = hexLineOffset(s, z))) {
            continue;
        }
        size_t i = *off;
        auto& cfg = out.back().config;
        while (z + 1 < s.size() && isHex(s[z]) && isHex(s[z + 1]) &&
               (z + 2 == s.size() || s[z + 2] == ' ')) {
            if (i >= 4096) {
                throw HostgenError(path + ":" + std::to_string(lineNo) +
                                   ": at most 4096 bytes of config space are supported");
            }
            cfg[i++] = static_cast<uint8_t>(hexAt(s, z, 2));
            z += 2;
            if (z < s.size()) {
                ++z;
            }
        }
        if (z < s.size()) {
            throw HostgenError(path + ":" + std::to_string(lineNo) + ": malformed hex line");
        }
        if (i > ends.back()) {
            ends.back() = i;
        }
    }
    for (size_t k = 0; k < out.size(); ++k) {
        out[k].config.resize(roundSize(ends[k]));
    }
    return out;
}

} // namespace svad::hostgen
