// The byte layout fuzz_dbus_args reads an a{sv} from, and a writer of it for
// the seeds. No sdbus-c++ here: the seeds are plain bytes.
//
//   byte 0    the keys a known-key byte picks from (KeySet, modulo 4)
//   byte 1    the number of entries (modulo kMaxEntries + 1)
//   entries   a key, then a value
//   key       a byte k: below kRawKey, the known key k (modulo the set's size);
//             else a raw key of any bytes: a length byte (kLongLength: two more
//             bytes, little endian, modulo kMaxLongKey + 1), then the bytes
//   value     a type byte (ValueType, modulo kValueTypes), then its payload:
//             integers little endian at their width, a double as its 8 bytes,
//             a string as a length byte then its bytes (a length byte from
//             kKnownWord on picks kKnownWords[length - kKnownWord] instead),
//             an object path like a string, an array or a{sv} as a count byte
//             (modulo kMaxItems + 1) then its items, a struct (us) as its two
//             fields. Missing bytes read as zero.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace svad::fuzz::dbus_args {

enum class KeySet : uint8_t { Filter, Allocate, Reserve, All };
inline constexpr int kKeySets = 4;

inline constexpr std::array<std::string_view, 12> kFilterKeys = {
    "kind",  "address", "driver", "unit", "vendor", "device",
    "group", "pasid",   "ats",    "pri",  "siov",   "vfio"};
inline constexpr std::array<std::string_view, 3> kAllocateKeys = {"mode", "fault_queue",
                                                                  "owner_pid"};
inline constexpr std::array<std::string_view, 1> kReserveKeys = {"owner_pid"};

inline constexpr uint8_t kRawKey = 0xC0;
inline constexpr uint8_t kLongLength = 0xFF;
inline constexpr size_t kMaxLongKey = 4096;
inline constexpr size_t kMaxEntries = 8;
inline constexpr size_t kMaxItems = 4;

enum class ValueType : uint8_t {
    Bool,
    Byte,
    Uint16,
    Int16,
    Uint32,
    Int32,
    Uint64,
    Int64,
    Double,
    String,
    ObjectPath,
    StringArray,
    VariantArray,
    Dict,
    Struct,
    Uint32Array,
    StringDict,
};
inline constexpr int kValueTypes = 17;

// Words the daemon compares strings with (modes, a device's names).
inline constexpr uint8_t kKnownWord = 0xF0;
inline constexpr std::array<std::string_view, 10> kKnownWords = {
    "handoff", "attached", "reserved",   "0000:6a:01.0", "vfio-pci",
    "dmar0",   "vdpa0",    "vhost_vdpa", "idxd",         ""};

// The known key `name` in `set`'s order.
inline uint8_t knownKeyIndex(KeySet set, std::string_view name) {
    auto find = [&](const auto& keys, uint8_t base) -> int {
        for (size_t i = 0; i < keys.size(); ++i) {
            if (keys[i] == name) {
                return base + static_cast<int>(i);
            }
        }
        return -1;
    };
    int i = -1;
    switch (set) {
    case KeySet::Filter:
        i = find(kFilterKeys, 0);
        break;
    case KeySet::Allocate:
        i = find(kAllocateKeys, 0);
        break;
    case KeySet::Reserve:
        i = find(kReserveKeys, 0);
        break;
    case KeySet::All:
        i = find(kFilterKeys, 0);
        if (i < 0) {
            i = find(kAllocateKeys, kFilterKeys.size());
        }
        break;
    }
    return i < 0 ? 0 : static_cast<uint8_t>(i);
}

// Writes inputs in the layout above.
class Writer {
public:
    Writer(KeySet set, uint8_t entries) : set_(set) {
        bytes_ += static_cast<char>(set);
        bytes_ += static_cast<char>(entries);
    }
    Writer& key(std::string_view name) {
        bytes_ += static_cast<char>(knownKeyIndex(set_, name));
        return *this;
    }
    Writer& rawKey(std::string_view name) {
        bytes_ += static_cast<char>(kRawKey);
        if (name.size() >= kLongLength) {
            bytes_ += static_cast<char>(kLongLength);
            bytes_ += static_cast<char>(name.size() & 0xFF);
            bytes_ += static_cast<char>((name.size() >> 8) & 0xFF);
        } else {
            bytes_ += static_cast<char>(name.size());
        }
        bytes_ += name;
        return *this;
    }
    Writer& type(ValueType t) {
        bytes_ += static_cast<char>(t);
        return *this;
    }
    template <typename T> Writer& number(ValueType t, T v) {
        type(t);
        char raw[sizeof(T)];
        std::memcpy(raw, &v, sizeof(T));
        bytes_.append(raw, sizeof(T));
        return *this;
    }
    Writer& boolean(bool v) { return number<uint8_t>(ValueType::Bool, v ? 1 : 0); }
    Writer& string(std::string_view s, ValueType t = ValueType::String) {
        type(t);
        bytes_ += static_cast<char>(s.size());
        bytes_ += s;
        return *this;
    }
    // An array's or a dictionary's count; its items follow.
    Writer& count(ValueType t, uint8_t n) {
        type(t);
        bytes_ += static_cast<char>(n);
        return *this;
    }
    const std::string& bytes() const { return bytes_; }

private:
    KeySet set_;
    std::string bytes_;
};

} // namespace svad::fuzz::dbus_args
