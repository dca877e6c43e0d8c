#include "svad/core/host_warnings.h"

#include "svad/core/log.h"

#include <string_view>
#include <vector>

namespace svad::core {

namespace {

// The log field naming the object: a vDPA device is a DEVICE in the log (as
// its bus object is), but keyed apart from a PCI function.
log::Fields fieldsOf(const std::string& kind, const std::string& name) {
    if (kind.empty()) {
        return {};
    }
    return {{kind == "VDPA" ? std::string("DEVICE") : kind, name}};
}

} // namespace

void HostWarnings::update(const Host& host) {
    std::vector<const Key*> order; // the host's warnings as they come, each once
    std::set<Key> now;
    auto add = [&order, &now](std::string_view kind, const std::string& name,
                              const std::vector<std::string>& warnings) {
        for (const auto& w : warnings) {
            auto [it, fresh] = now.emplace(std::string(kind), name, w);
            if (fresh) {
                order.push_back(&*it);
            }
        }
    };
    add("", "", host.warnings);
    for (const auto& d : host.devices) {
        add("DEVICE", d.address, d.warnings);
    }
    for (const auto& g : host.groups) {
        add("GROUP", std::to_string(g.id), g.warnings);
    }
    for (const auto& u : host.units) {
        add("UNIT", u.name, u.warnings);
    }
    for (const auto& q : host.queues) {
        add("QUEUE", q.name, q.warnings);
    }
    for (const auto& v : host.vdpa) {
        add("VDPA", v.name, v.warnings);
    }
    for (const Key* k : order) {
        if (known_.count(*k) == 0) {
            const auto& [kind, name, text] = *k;
            log::warning(text, fieldsOf(kind, name));
        }
    }
    for (const auto& k : known_) {
        if (now.count(k) == 0) {
            const auto& [kind, name, text] = k;
            log::info("warning cleared: " + text, fieldsOf(kind, name));
        }
    }
    known_ = std::move(now);
}

} // namespace svad::core
