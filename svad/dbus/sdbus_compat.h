// The one place that knows which sdbus-c++ svad is built against: 1.x
// (Debian 12) or 2.x (Debian 13). Everything that is spelled differently in
// the two sits here; the rest of svad, svactl, the tests and the benchmarks
// call these functions and types and compile unchanged against either.
//
// What 2.x changed, and what hides it here:
// - names are strong types (ServiceName, InterfaceName, PropertyName, Error::Name)
//   with explicit constructors: ServiceName/InterfaceName/PropertyName below are
//   those types on 2.x and std::string on 1.x; makeError(), makeProxy()
//   take plain strings;
// - the ObjectManager and Properties proxies' callbacks take those types:
//   InterfacesAndProperties, InterfaceNames, PropertyValues, PropertyNames;
//   managedObjects() and allProperties() answer with plain-string keys;
// - emitPropertiesChangedSignal() takes std::vector<PropertyName>: propertyNames();
// - IConnection::addMatch() returns a Slot only when asked (return_slot), and
//   handlers take their Message by value: addMatch();
// - a proxy's signal handlers need no finishRegistration() any more:
//   onSignal(), finishRegistration();
// - an async reply handler gets std::optional<Error>, not const Error*: AsyncError;
// - the currently processed message is a Message by value, not a pointer:
//   currentSender(), currentCall();
// - Message's getters return const char* (maybe null), not std::string:
//   memberOf(), senderOf();
// - processPendingRequest() is processPendingEvent(); the poll data's timeout
//   is a std::chrono value and there is an event fd to poll as well: PollData,
//   pollData(), processPending();
// - requestName()/releaseName() take a ServiceName: requestName(), releaseName().
// Neither version tells a message's cookies nor (2.x) turns the current
// message into a MethodCall; rawMessage() reaches the sd-bus message under a
// Message for that, the same way on both.
// SVAD_SDBUS_CPP_MAJOR comes from CMake (the pkg-config version it found).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <systemd/sd-bus.h>
#include <utility>
#include <vector>

#ifndef SVAD_SDBUS_CPP_MAJOR
#error "SVAD_SDBUS_CPP_MAJOR is not defined: link svad_dbus_api (CMakeLists.txt)"
#endif

namespace svad::dbus::compat {

#if SVAD_SDBUS_CPP_MAJOR >= 2
using ServiceName = sdbus::ServiceName;
using InterfaceName = sdbus::InterfaceName;
using PropertyName = sdbus::PropertyName;
// What an async reply handler gets first: empty or null when the call succeeded.
using AsyncError = std::optional<sdbus::Error>;
#else
using ServiceName = std::string;
using InterfaceName = std::string;
using PropertyName = std::string;
using AsyncError = const sdbus::Error*;
#endif

// The argument types of sdbus::ObjectManager_proxy's and sdbus::Properties_proxy's callbacks.
using PropertyValues = std::map<PropertyName, sdbus::Variant>;
using InterfacesAndProperties = std::map<InterfaceName, PropertyValues>;
using InterfaceNames = std::vector<InterfaceName>;
using PropertyNames = std::vector<PropertyName>;

// An ObjectManager's objects and an object's properties, keyed by plain strings.
using Properties = std::map<std::string, sdbus::Variant>;
using ManagedObjects = std::map<sdbus::ObjectPath, std::map<std::string, Properties>>;

inline sdbus::Error makeError(const std::string& name, const std::string& message) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    return sdbus::Error(sdbus::Error::Name(name), message);
#else
    return sdbus::Error(name, message);
#endif
}

inline std::unique_ptr<sdbus::IProxy>
makeProxy(sdbus::IConnection& connection, const std::string& service, const std::string& path) {
    return sdbus::createProxy(connection, ServiceName(service), sdbus::ObjectPath(path));
}

// The D-Bus signature of a C++ type ("a(qqy)"): a string on 1.x, a character
// array on 2.x.
template <typename T> std::string signatureOf() {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    const auto& s = sdbus::signature_of<T>::value;
    return std::string(s.begin(), s.end());
#else
    return sdbus::signature_of<T>::str();
#endif
}

inline PropertyNames propertyNames(const std::vector<std::string>& names) {
    return {names.begin(), names.end()};
}

inline ManagedObjects managedObjects(sdbus::IProxy& proxy) {
    ManagedObjects out;
    proxy.callMethod("GetManagedObjects")
        .onInterface("org.freedesktop.DBus.ObjectManager")
        .storeResultsTo(out);
    return out;
}

inline Properties allProperties(sdbus::IProxy& proxy, const std::string& interface) {
    Properties out;
    proxy.callMethod("GetAll")
        .onInterface("org.freedesktop.DBus.Properties")
        .withArguments(interface)
        .storeResultsTo(out);
    return out;
}

// Calls `handler` with each message matching `match` until the slot goes.
[[nodiscard]] inline sdbus::Slot addMatch(sdbus::IConnection& connection, const std::string& match,
                                          std::function<void(sdbus::Message&)> handler) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    return connection.addMatch(
        match, [handler = std::move(handler)](sdbus::Message message) { handler(message); },
        sdbus::return_slot);
#else
    return connection.addMatch(match, std::move(handler));
#endif
}

// Subscribes to a signal; in force once finishRegistration() ran (at once on 2.x).
inline void onSignal(sdbus::IProxy& proxy, const std::string& interface, const std::string& name,
                     std::function<void(sdbus::Signal&)> handler) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    proxy.registerSignalHandler(
        InterfaceName(interface), sdbus::SignalName(name),
        [handler = std::move(handler)](sdbus::Signal signal) { handler(signal); });
#else
    proxy.registerSignalHandler(interface, name, std::move(handler));
#endif
}

// After a proxy's onSignal()s and uponSignal(...).call(...)s.
inline void finishRegistration(sdbus::IProxy& proxy) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    (void)proxy;
#else
    proxy.finishRegistration();
#endif
}

inline std::string memberOf(const sdbus::Message& message) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    const char* member = message.getMemberName();
    return member != nullptr ? member : "";
#else
    return message.getMemberName();
#endif
}

inline std::string senderOf(const sdbus::Message& message) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    const char* sender = message.getSender();
    return sender != nullptr ? sender : "";
#else
    return message.getSender();
#endif
}

namespace detail {

// sdbus-c++ hides a message's sd-bus message (and, on 2.x, how to make a
// MethodCall of the current message); both keep it in Message::msg_.
struct RawMessage : sdbus::MethodCall {
    static sd_bus_message* of(const sdbus::Message& m) {
        return static_cast<sd_bus_message*>(m.*(&RawMessage::msg_));
    }
#if SVAD_SDBUS_CPP_MAJOR >= 2
    explicit RawMessage(const sdbus::Message& m)
        : sdbus::MethodCall(m.*(&RawMessage::msg_), m.*(&RawMessage::connection_)) {}
#endif
};

} // namespace detail

// The sd-bus message under `message` (for what sdbus-c++ does not tell: cookies, errors).
inline sd_bus_message* rawMessage(const sdbus::Message& message) {
    return detail::RawMessage::of(message);
}

// The sd-bus connection under `object`'s (from a signal made on it, never sent):
// for what sdbus-c++ does not offer, such as a message filter.
inline sd_bus* rawBus(sdbus::IObject& object, const std::string& interface) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    auto probe = object.createSignal(sdbus::InterfaceName(interface), sdbus::SignalName("Probe"));
#else
    auto probe = object.createSignal(interface, "Probe");
#endif
    return sd_bus_message_get_bus(rawMessage(probe));
}

// The sd-bus connection under `connection` (through an object made for the
// purpose and never registered).
inline sd_bus* rawBus(sdbus::IConnection& connection) {
    auto probe = sdbus::createObject(connection, sdbus::ObjectPath("/"));
    return rawBus(*probe, "org.freedesktop.DBus.Peer");
}

// The sender of the message `object` is handling, if it is handling one.
inline std::optional<std::string> currentSender(const sdbus::IObject& object) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    sdbus::Message m = object.getCurrentlyProcessedMessage();
    if (!m.isValid()) {
        return std::nullopt;
    }
    return senderOf(m);
#else
    const sdbus::Message* m = object.getCurrentlyProcessedMessage();
    if (m == nullptr) {
        return std::nullopt;
    }
    return senderOf(*m);
#endif
}

// The method call `object` is handling, if it is handling one: to answer it later by hand.
inline std::optional<sdbus::MethodCall> currentCall(const sdbus::IObject& object) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    sdbus::Message m = object.getCurrentlyProcessedMessage();
    uint8_t type = 0;
    if (!m.isValid() || sd_bus_message_get_type(rawMessage(m), &type) < 0 ||
        type != SD_BUS_MESSAGE_METHOD_CALL) {
        return std::nullopt;
    }
    return sdbus::MethodCall(detail::RawMessage(m));
#else
    // sdbus-c++ 1.x dispatches a method with the MethodCall it is processing.
    const auto* m = static_cast<const sdbus::MethodCall*>(object.getCurrentlyProcessedMessage());
    if (m == nullptr) {
        return std::nullopt;
    }
    return *m;
#endif
}

// What an external event loop waits for before calling processPending():
// `fd` for `events`, `eventFd` (-1 if none) for reading, until the absolute
// CLOCK_MONOTONIC time `timeoutUsec` (UINT64_MAX: no timeout).
struct PollData {
    int fd = -1;
    short events = 0;
    uint64_t timeoutUsec = UINT64_MAX;
    int eventFd = -1;
};

inline PollData pollData(const sdbus::IConnection& connection) {
    const sdbus::IConnection::PollData p = connection.getEventLoopPollData();
    PollData out;
    out.fd = p.fd;
    out.events = p.events;
#if SVAD_SDBUS_CPP_MAJOR >= 2
    out.timeoutUsec = p.timeout == std::chrono::microseconds::max()
                          ? UINT64_MAX
                          : static_cast<uint64_t>(p.timeout.count());
    out.eventFd = p.eventFd;
#else
    out.timeoutUsec = p.timeout_usec;
#endif
    return out;
}

// Processes one pending event; false when there was none.
inline bool processPending(sdbus::IConnection& connection) {
#if SVAD_SDBUS_CPP_MAJOR >= 2
    return connection.processPendingEvent();
#else
    return connection.processPendingRequest();
#endif
}

inline void requestName(sdbus::IConnection& connection, const std::string& name) {
    connection.requestName(ServiceName(name));
}

inline void releaseName(sdbus::IConnection& connection, const std::string& name) {
    connection.releaseName(ServiceName(name));
}

} // namespace svad::dbus::compat
