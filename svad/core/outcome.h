// The result of an operation the caller can see fail: a value, or a named
// error (org.svad.Svad1.Error.<error>) with a message.
#pragma once

#include "svad/names.h"

#include <string>
#include <utility>
#include <variant>

namespace svad::core {

// A failure the caller sees as org.svad.Svad1.Error.<error>.
struct Failure {
    names::Error error = names::Error::InvalidArgument;
    std::string message;
    std::string plugin; // who refused, for a policy refusal: "config", a plugin's name, or "none"
};

template <typename T> class Outcome {
public:
    Outcome(T value) : v_(std::move(value)) {}
    Outcome(Failure f) : v_(std::move(f)) {}
    bool ok() const { return std::holds_alternative<T>(v_); }
    T& value() { return std::get<T>(v_); }
    const Failure& failure() const { return std::get<Failure>(v_); }

private:
    std::variant<T, Failure> v_;
};

struct Done {};

} // namespace svad::core
