// Errors as svad sends them: org.svad.Svad1.Error.<name>, with a text that is
// bounded and valid UTF-8 whatever it quotes (a message over the bus's limit
// would take svad off the bus; an invalid one is not sent).
#pragma once

#include "svad/core/outcome.h"
#include "svad/core/text.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/names.h"

#include <sdbus-c++/sdbus-c++.h>
#include <string>

namespace svad::dbus {

inline constexpr size_t kMaxErrorText = size_t{16} * 1024;

inline sdbus::Error busError(names::Error e, const std::string& message) {
    return compat::makeError(std::string(names::errorInfo(e).dbusName),
                             core::cutUtf8(message, kMaxErrorText));
}

inline sdbus::Error busError(const core::Failure& f) {
    return busError(f.error, f.message);
}

[[noreturn]] inline void throwError(names::Error e, const std::string& message) {
    throw busError(e, message);
}

// A value of the expected D-Bus type, or InvalidArgument naming both; `what`
// is "filter key" or "option".
template <typename T>
T typedValue(const char* what, const std::string& key, const sdbus::Variant& v,
             const char* signature) {
    if (!v.containsValueOfType<T>()) {
        throwError(names::Error::InvalidArgument, std::string(what) + " '" + core::echo(key) +
                                                      "' expects type '" + signature + "', got '" +
                                                      core::echo(v.peekValueType()) + "'");
    }
    return v.get<T>();
}

} // namespace svad::dbus
