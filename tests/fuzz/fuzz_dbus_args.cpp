// The decoding of the Manager's a{sv} arguments: ListDevices' filter and the
// options of AllocateContext, AllocatePasid and ReserveDevices, from
// dictionaries built of the fuzz bytes (dbus_args_bytes.h). Each decoder gives
// a value or throws an sdbus::Error named org.svad.Svad1.Error.* with a valid,
// bounded text; anything else is a finding. A built filter is matched against
// a few devices.
#include "dbus_args_bytes.h"
#include "svad/core/admission.h"
#include "svad/core/text.h"
#include "svad/dbus/device_filter.h"
#include "svad/dbus/errors.h"
#include "svad/dbus/request_options.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <vector>

namespace {

using namespace svad::fuzz::dbus_args;

constexpr int kMaxDepth = 4;

class Bytes {
public:
    Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
    template <typename T> T number() {
        uint8_t raw[sizeof(T)] = {};
        for (auto& b : raw) {
            b = byte();
        }
        T v;
        std::memcpy(&v, raw, sizeof(T));
        return v;
    }
    std::string take(size_t n) {
        n = std::min(n, size_ - pos_);
        std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
        pos_ += n;
        return s;
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

[[noreturn]] void finding(const std::string& what) {
    std::fprintf(stderr, "fuzz_dbus_args: %s\n", what.c_str());
    std::abort();
}

std::string knownKey(KeySet set, uint8_t k) {
    switch (set) {
    case KeySet::Filter:
        return std::string(kFilterKeys[k % kFilterKeys.size()]);
    case KeySet::Allocate:
        return std::string(kAllocateKeys[k % kAllocateKeys.size()]);
    case KeySet::Reserve:
        return std::string(kReserveKeys[k % kReserveKeys.size()]);
    case KeySet::All:
        break;
    }
    const size_t i = k % (kFilterKeys.size() + kAllocateKeys.size());
    return std::string(i < kFilterKeys.size() ? kFilterKeys[i]
                                              : kAllocateKeys[i - kFilterKeys.size()]);
}

// A key as the bus hands it over is valid UTF-8; the decoders must cope with
// any bytes all the same, so a raw key of the top dictionary is left as it is
// (a nested dictionary's goes into a message: sd-bus takes only valid text).
std::string readKey(Bytes& in, KeySet set, bool nested) {
    const uint8_t k = in.byte();
    if (k < kRawKey) {
        return knownKey(set, k);
    }
    size_t n = in.byte();
    if (n == kLongLength) {
        n = in.number<uint16_t>() % (kMaxLongKey + 1);
    }
    std::string key = in.take(n);
    return !nested || svad::core::validUtf8(key) ? key : svad::core::sanitizeUtf8(key);
}

// A string sd-bus takes: the bytes when they are valid UTF-8, else escaped.
std::string readString(Bytes& in) {
    const uint8_t n = in.byte();
    if (n >= kKnownWord) {
        return std::string(kKnownWords[(n - kKnownWord) % kKnownWords.size()]);
    }
    std::string s = in.take(n);
    return svad::core::validUtf8(s) ? s : svad::core::sanitizeUtf8(s);
}

std::string readPath(Bytes& in) {
    static constexpr char kChars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
    std::string path = "/";
    for (const char c : in.take(in.byte())) {
        const auto b = static_cast<uint8_t>(c);
        if (b % 8 == 0) {
            if (path.back() != '/') {
                path += '/';
            }
        } else {
            path += kChars[b % (sizeof(kChars) - 1)];
        }
    }
    if (path.size() > 1 && path.back() == '/') {
        path.pop_back();
    }
    return path;
}

std::map<std::string, sdbus::Variant> readDict(Bytes& in, KeySet set, size_t entries, int depth);

sdbus::Variant readValue(Bytes& in, KeySet set, int depth) {
    auto t = static_cast<ValueType>(in.byte() % kValueTypes);
    if (depth >= kMaxDepth && t >= ValueType::StringArray) {
        t = ValueType::Uint32;
    }
    switch (t) {
    case ValueType::Bool:
        return sdbus::Variant(in.byte() % 2 == 1);
    case ValueType::Byte:
        return sdbus::Variant(in.byte());
    case ValueType::Uint16:
        return sdbus::Variant(in.number<uint16_t>());
    case ValueType::Int16:
        return sdbus::Variant(in.number<int16_t>());
    case ValueType::Uint32:
        return sdbus::Variant(in.number<uint32_t>());
    case ValueType::Int32:
        return sdbus::Variant(in.number<int32_t>());
    case ValueType::Uint64:
        return sdbus::Variant(in.number<uint64_t>());
    case ValueType::Int64:
        return sdbus::Variant(in.number<int64_t>());
    case ValueType::Double:
        return sdbus::Variant(in.number<double>());
    case ValueType::String:
        return sdbus::Variant(readString(in));
    case ValueType::ObjectPath:
        return sdbus::Variant(sdbus::ObjectPath(readPath(in)));
    case ValueType::StringArray: {
        std::vector<std::string> items(in.byte() % (kMaxItems + 1));
        for (auto& s : items) {
            s = readString(in);
        }
        return sdbus::Variant(items);
    }
    case ValueType::VariantArray: {
        std::vector<sdbus::Variant> items;
        for (size_t n = in.byte() % (kMaxItems + 1); n > 0; --n) {
            items.push_back(readValue(in, set, depth + 1));
        }
        return sdbus::Variant(items);
    }
    case ValueType::Dict:
        return sdbus::Variant(readDict(in, set, in.byte() % (kMaxItems + 1), depth + 1));
    case ValueType::Struct: {
        const auto u = in.number<uint32_t>();
        return sdbus::Variant(sdbus::Struct<uint32_t, std::string>(u, readString(in)));
    }
    case ValueType::Uint32Array: {
        std::vector<uint32_t> items(in.byte() % (kMaxItems + 1));
        for (auto& u : items) {
            u = in.number<uint32_t>();
        }
        return sdbus::Variant(items);
    }
    case ValueType::StringDict: {
        std::map<std::string, std::string> items;
        for (size_t n = in.byte() % (kMaxItems + 1); n > 0; --n) {
            auto k = readString(in);
            items[k] = readString(in);
        }
        return sdbus::Variant(items);
    }
    }
    return sdbus::Variant(false);
}

std::map<std::string, sdbus::Variant> readDict(Bytes& in, KeySet set, size_t entries, int depth) {
    std::map<std::string, sdbus::Variant> dict;
    for (; entries > 0; --entries) {
        auto key = readKey(in, set, depth > 0);
        dict[key] = readValue(in, set, depth);
    }
    return dict;
}

// A decoder's refusal: one of svad's errors, with a text the bus would carry.
void checkError(const char* decoder, const sdbus::Error& e) {
    if (e.getName().rfind("org.svad.Svad1.Error.", 0) != 0) {
        finding(std::string(decoder) + " threw " + e.getName());
    }
    const std::string& message = e.getMessage();
    if (message.empty() || !svad::core::validUtf8(message) ||
        message.size() > svad::dbus::kMaxErrorText + svad::core::kEchoBytes) {
        finding(std::string(decoder) + ": an empty, invalid or oversized error text");
    }
}

bool allKnown(const std::map<std::string, sdbus::Variant>& dict, const auto& keys) {
    return std::all_of(dict.begin(), dict.end(), [&keys](const auto& entry) {
        return std::find(keys.begin(), keys.end(), entry.first) != keys.end();
    });
}

// Rows as svad publishes them: each points into a host it shares.
std::vector<svad::dbus::DeviceData> devices(Bytes& in) {
    auto host = std::make_shared<svad::core::Host>();
    host->devices.resize(3);
    auto& plain = host->devices[0];
    plain.address = "0000:00:02.0";
    plain.vendor = 0x8086;
    plain.device = 0x46a6;
    auto& capable = host->devices[1];
    capable.address = "0000:6a:01.0";
    capable.driver = "vfio-pci";
    capable.vendor = 0x8086;
    capable.device = 0x0b25;
    capable.group = 12;
    capable.iommuUnit = "dmar0";
    capable.vfioDevice = "vfio0";
    capable.caps.pasid.present = true;
    capable.caps.ats.present = true;
    capable.caps.pri.present = true;
    capable.caps.siov = true;
    auto& vdpa = host->vdpa.emplace_back();
    vdpa.name = "vdpa0";
    vdpa.driver = "vhost_vdpa";
    // One device from the rest of the bytes.
    auto& any = host->devices[2];
    any.address = readString(in);
    any.driver = readString(in);
    any.iommuUnit = readString(in);
    any.vendor = in.number<uint16_t>();
    any.device = in.number<uint16_t>();
    const uint8_t flags = in.byte();
    if (flags & 1) {
        any.group = in.number<uint32_t>();
    }
    any.caps.pasid.present = flags & 2;
    any.caps.ats.present = flags & 4;
    any.caps.pri.present = flags & 8;
    any.caps.siov = flags & 16;
    if (flags & 32) {
        any.vfioDevice = "vfio1";
    }
    std::vector<svad::dbus::DeviceData> out(4);
    for (auto& d : out) {
        d.host = host;
    }
    out[0].pci = &host->devices[0];
    out[1].pci = &host->devices[1];
    out[2].vdpa = &host->vdpa[0];
    out[3].pci = &host->devices[2];
    return out;
}

void fuzzFilter(const std::map<std::string, sdbus::Variant>& dict, Bytes& in) {
    std::optional<svad::dbus::DeviceFilter> filter;
    try {
        filter = svad::dbus::DeviceFilter::parse(dict);
    } catch (const sdbus::Error& e) {
        checkError("DeviceFilter::parse", e);
        return;
    }
    if (!allKnown(dict, kFilterKeys)) {
        finding("DeviceFilter::parse took an unknown key");
    }
    for (const auto& d : devices(in)) {
        const bool match = filter->matches(d);
        if (dict.empty() && !match) {
            finding("the empty filter left a device out");
        }
    }
}

void fuzzAllocate(const std::map<std::string, sdbus::Variant>& dict) {
    svad::core::AllocateRequest req;
    try {
        svad::dbus::decodeAllocateOptions(dict, req);
    } catch (const sdbus::Error& e) {
        checkError("decodeAllocateOptions", e);
        return;
    }
    if (!allKnown(dict, kAllocateKeys)) {
        finding("decodeAllocateOptions took an unknown key");
    }
    if (req.ownerPid && *req.ownerPid <= 0) {
        finding("decodeAllocateOptions took a pid that is none");
    }
}

void fuzzPasid(const std::map<std::string, sdbus::Variant>& dict) {
    try {
        svad::dbus::decodePasidOptions(dict);
    } catch (const sdbus::Error& e) {
        checkError("decodePasidOptions", e);
        return;
    }
    if (!dict.empty()) {
        finding("decodePasidOptions took an option");
    }
}

void fuzzReserve(const std::map<std::string, sdbus::Variant>& dict) {
    svad::core::AllocateRequest req;
    // As the daemon's lookup answers: not a pid, no such process, or its uid.
    auto lookup = [](uint32_t pid) -> svad::core::Outcome<uid_t> {
        if (pid == 0 || pid > INT32_MAX) {
            return svad::core::Failure{
                svad::names::Error::InvalidArgument, "option 'owner_pid' is not a pid", {}};
        }
        if (pid % 2 == 1) {
            return svad::core::Failure{svad::names::Error::InvalidArgument,
                                       "option 'owner_pid': there is no process " +
                                           std::to_string(pid),
                                       {}};
        }
        return static_cast<uid_t>(pid % 1000);
    };
    try {
        svad::dbus::decodeReserveOptions(dict, req, lookup);
    } catch (const sdbus::Error& e) {
        checkError("decodeReserveOptions", e);
        return;
    }
    if (!allKnown(dict, kReserveKeys)) {
        finding("decodeReserveOptions took an unknown key");
    }
    if (req.ownerPid.has_value() != req.ownerUid.has_value()) {
        finding("decodeReserveOptions left a pid without its uid");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Bytes in(data, size);
    const auto set = static_cast<KeySet>(in.byte() % kKeySets);
    std::map<std::string, sdbus::Variant> dict;
    try {
        dict = readDict(in, set, in.byte() % (kMaxEntries + 1), 0);
    } catch (const sdbus::Error& e) {
        // Every string built is one validUtf8() passes: sd-bus must take it.
        finding("sd-bus refused a value: " + e.getName() + ": " + e.getMessage());
    }
    fuzzFilter(dict, in);
    fuzzAllocate(dict);
    fuzzPasid(dict);
    fuzzReserve(dict);
    return 0;
}
