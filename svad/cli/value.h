// A property value as svactl reads it from a listing: decoded once from the
// message into plain data, with the parts of sdbus::Variant's interface the
// rendering uses (peekValueType, containsValueOfType, get). A listing of a
// large host carries hundreds of thousands of values; an sdbus::Variant costs
// a message of its own each.
#pragma once

#include "svad/dbus/sdbus_compat.h"

#include <cstdint>
#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <stdexcept>
#include <string>
#include <systemd/sd-bus.h>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace svad::cli {

class Value {
public:
    Value() = default;
    // Reads the complete value at `m`'s position (a variant's contents are read
    // as the value itself); throws std::runtime_error on a malformed message.
    static Value read(sd_bus_message* m);
    // The value an sdbus::Variant holds, for the types svad's properties and
    // replies use (of another type, its signature alone).
    static Value of(const sdbus::Variant& v);
    // A typed value's.
    template <typename T> static Value from(const T& x) {
        Value v;
        v.signature_ = dbus::compat::signatureOf<T>();
        v.set(x);
        return v;
    }

    // Its D-Bus signature ("s", "a(qqy)").
    const std::string& peekValueType() const { return signature_; }
    template <typename T> bool containsValueOfType() const {
        return signature_ == dbus::compat::signatureOf<T>();
    }
    // The value as a T of exactly its signature; throws std::runtime_error otherwise.
    template <typename T> T get() const {
        if (!containsValueOfType<T>()) {
            throw std::runtime_error("a value of type '" + signature_ + "' read as '" +
                                     dbus::compat::signatureOf<T>() + "'");
        }
        T out{};
        into(out);
        return out;
    }

private:
    // Reads one number of D-Bus type `type` (a T on the wire) into this value.
    template <typename T> Value& readNumber(sd_bus_message* m, char type);
    template <typename T> std::enable_if_t<std::is_arithmetic_v<T>> set(T x) {
        if constexpr (std::is_floating_point_v<T>) {
            real_ = x;
        } else if constexpr (std::is_signed_v<T>) {
            signed_ = x;
        } else {
            unsigned_ = x;
        }
    }
    void set(const std::string& x) { text_ = x; }
    void set(const sdbus::ObjectPath& x) { text_ = x; }
    template <typename T> void set(const std::vector<T>& x) {
        for (const auto& i : x) {
            items_.push_back(from(i));
        }
    }
    template <typename K, typename V> void set(const std::map<K, V>& x) {
        for (const auto& [k, i] : x) {
            Value entry;
            entry.signature_ =
                "{" + dbus::compat::signatureOf<K>() + dbus::compat::signatureOf<V>() + "}";
            entry.items_ = {from(k), from(i)};
            items_.push_back(std::move(entry));
        }
    }
    template <typename... Ts> void set(const sdbus::Struct<Ts...>& x) {
        std::apply([this](const auto&... f) { (items_.push_back(from(f)), ...); },
                   static_cast<const std::tuple<Ts...>&>(x));
    }

    template <typename T> std::enable_if_t<std::is_integral_v<T>> into(T& out) const {
        if constexpr (std::is_signed_v<T>) {
            out = static_cast<T>(signed_);
        } else {
            out = static_cast<T>(unsigned_);
        }
    }
    void into(double& out) const { out = real_; }
    void into(std::string& out) const { out = text_; }
    void into(sdbus::ObjectPath& out) const { out = sdbus::ObjectPath(text_); }
    void into(sdbus::UnixFd& /*out*/) const {
        throw std::runtime_error("a listing carries no file descriptor");
    }
    template <typename T> void into(std::vector<T>& out) const {
        out.reserve(items_.size());
        for (const auto& i : items_) {
            out.push_back(i.get<T>());
        }
    }
    template <typename K, typename V> void into(std::map<K, V>& out) const {
        for (const auto& entry : items_) {
            out.emplace(entry.items_.at(0).get<K>(), entry.items_.at(1).get<V>());
        }
    }
    template <typename... Ts> void into(sdbus::Struct<Ts...>& out) const {
        intoFields(out, std::index_sequence_for<Ts...>{});
    }
    template <typename... Ts, size_t... I>
    void intoFields(sdbus::Struct<Ts...>& out, std::index_sequence<I...> /*unused*/) const {
        ((std::get<I>(out) =
              items_.at(I).template get<std::tuple_element_t<I, std::tuple<Ts...>>>()),
         ...);
    }

    std::string signature_;
    uint64_t unsigned_ = 0;
    int64_t signed_ = 0;
    double real_ = 0;
    std::string text_;
    std::vector<Value> items_; // an array's items, a struct's or dict entry's fields
};

} // namespace svad::cli
