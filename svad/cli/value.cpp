#include "svad/cli/value.h"

#include <cerrno>
#include <cstring>

namespace svad::cli {

namespace {

void check(int r, const char* what) {
    if (r < 0) {
        throw std::runtime_error(std::string("cannot read ") + what +
                                 " from svad's reply: " + std::strerror(-r));
    }
}

} // namespace

namespace {

template <typename T> bool as(const sdbus::Variant& v, const std::string& sig, Value& out) {
    if (sig != dbus::compat::signatureOf<T>()) {
        return false;
    }
    out = Value::from(v.get<T>());
    return true;
}

} // namespace

Value Value::of(const sdbus::Variant& v) {
    using sdbus::ObjectPath;
    using sdbus::Struct;
    using std::map;
    using std::string;
    using std::vector;
    const std::string sig = v.peekValueType();
    Value out;
    if (as<string>(v, sig, out) || as<ObjectPath>(v, sig, out) || as<bool>(v, sig, out) ||
        as<uint8_t>(v, sig, out) || as<uint16_t>(v, sig, out) || as<uint32_t>(v, sig, out) ||
        as<uint64_t>(v, sig, out) || as<int16_t>(v, sig, out) || as<int32_t>(v, sig, out) ||
        as<int64_t>(v, sig, out) || as<double>(v, sig, out) || as<vector<string>>(v, sig, out) ||
        as<vector<ObjectPath>>(v, sig, out) ||
        as<vector<Struct<uint16_t, uint16_t, uint8_t>>>(v, sig, out) ||
        as<vector<Struct<uint64_t, uint64_t, string>>>(v, sig, out) ||
        as<vector<Struct<uint64_t, uint64_t>>>(v, sig, out) ||
        as<vector<Struct<uint32_t, string>>>(v, sig, out) ||
        as<vector<Struct<string, uint64_t>>>(v, sig, out) ||
        as<vector<Struct<string, string>>>(v, sig, out) ||
        as<vector<Struct<string, string, string, uint32_t, vector<string>>>>(v, sig, out) ||
        as<map<string, bool>>(v, sig, out) || as<map<string, string>>(v, sig, out) ||
        as<map<string, uint32_t>>(v, sig, out) || as<map<string, uint64_t>>(v, sig, out)) {
        return out;
    }
    out.signature_ = sig;
    return out;
}

template <typename T> Value& Value::readNumber(sd_bus_message* m, char type) {
    T x{};
    check(sd_bus_message_read_basic(m, type, &x), "a number");
    set(x);
    return *this;
}

Value Value::read(sd_bus_message* m) {
    char type = 0;
    const char* contents = nullptr;
    check(sd_bus_message_peek_type(m, &type, &contents), "a value");
    Value v;
    switch (type) {
    case SD_BUS_TYPE_VARIANT: {
        check(sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, contents), "a variant");
        v = read(m);
        check(sd_bus_message_exit_container(m), "a variant");
        return v;
    }
    case SD_BUS_TYPE_ARRAY:
    case SD_BUS_TYPE_STRUCT:
    case SD_BUS_TYPE_DICT_ENTRY: {
        v.signature_ = type == SD_BUS_TYPE_ARRAY    ? "a" + std::string(contents)
                       : type == SD_BUS_TYPE_STRUCT ? "(" + std::string(contents) + ")"
                                                    : "{" + std::string(contents) + "}";
        check(sd_bus_message_enter_container(m, type, contents), "a container");
        for (;;) {
            const int end = sd_bus_message_at_end(m, false);
            check(end, "a container");
            if (end > 0) {
                break;
            }
            v.items_.push_back(read(m));
        }
        check(sd_bus_message_exit_container(m), "a container");
        return v;
    }
    default:
        break;
    }
    v.signature_ = std::string(1, type);
    switch (type) {
    case SD_BUS_TYPE_STRING:
    case SD_BUS_TYPE_OBJECT_PATH:
    case SD_BUS_TYPE_SIGNATURE: {
        const char* s = nullptr;
        check(sd_bus_message_read_basic(m, type, &s), "a string");
        v.text_ = s != nullptr ? s : "";
        return v;
    }
    case SD_BUS_TYPE_DOUBLE:
        return v.readNumber<double>(m, type);
    case SD_BUS_TYPE_BOOLEAN: {
        v.readNumber<int32_t>(m, type); // sd-bus reads a boolean as an int
        v.set(v.signed_ != 0);
        return v;
    }
    case SD_BUS_TYPE_INT32:
    case SD_BUS_TYPE_UNIX_FD:
        return v.readNumber<int32_t>(m, type);
    case SD_BUS_TYPE_INT16:
        return v.readNumber<int16_t>(m, type);
    case SD_BUS_TYPE_INT64:
        return v.readNumber<int64_t>(m, type);
    case SD_BUS_TYPE_BYTE:
        return v.readNumber<uint8_t>(m, type);
    case SD_BUS_TYPE_UINT16:
        return v.readNumber<uint16_t>(m, type);
    case SD_BUS_TYPE_UINT32:
        return v.readNumber<uint32_t>(m, type);
    case SD_BUS_TYPE_UINT64:
        return v.readNumber<uint64_t>(m, type);
    default:
        throw std::runtime_error(std::string("svad's reply holds a value of unknown type '") +
                                 type + "'");
    }
}

} // namespace svad::cli
