// The warnings of a host in the log: each told once, when it first appears,
// not again on every rescan or hotplug re-read that still finds it. One that
// goes away is told once, at info level, as cleared; if it comes back it is
// told again. What is remembered is the last host's warnings, no more.
#pragma once

#include "svad/core/model.h"

#include <cstddef>
#include <set>
#include <string>
#include <tuple>

namespace svad::core {

class HostWarnings {
public:
    // Logs the warnings of `host` that the last host did not have (in the
    // host's order: the host's own, then devices, groups, units, queues, vDPA
    // devices), and those of the last host that `host` no longer has; then
    // remembers `host`'s.
    void update(const Host& host);
    // How many warnings are remembered: the last host's, each once.
    size_t size() const { return known_.size(); }

private:
    // What a warning is about and its text: the object's kind ("" for the host
    // itself, DEVICE, GROUP, UNIT, QUEUE, VDPA), its name, the text.
    using Key = std::tuple<std::string, std::string, std::string>;
    std::set<Key> known_;
};

} // namespace svad::core
