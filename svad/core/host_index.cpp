#include "svad/core/host_index.h"

#include "svad/core/pasid_width.h"

#include <utility>

namespace svad::core {

HostIndex::HostIndex() : HostIndex(std::make_shared<const Host>()) {}

HostIndex::HostIndex(std::shared_ptr<const Host> host)
    : host_(host != nullptr ? std::move(host) : std::make_shared<const Host>()) {
    build();
}

void HostIndex::build() {
    const Host& h = *host_;
    pci_.reserve(h.devices.size());
    for (const auto& d : h.devices) {
        pci_.emplace(d.address, &d);
    }
    vdpa_.reserve(h.vdpa.size());
    for (const auto& v : h.vdpa) {
        vdpa_.emplace(v.name, &v);
    }
    queues_.reserve(h.queues.size());
    for (const auto& q : h.queues) {
        queues_.emplace(q.name, &q);
        if (!q.parentDevice.empty()) {
            children_[q.parentDevice].push_back(q.name);
        }
    }
    for (const auto& v : h.vdpa) {
        if (!v.parentDevice.empty()) {
            children_[v.parentDevice].push_back(v.name);
        }
    }
    groups_.reserve(h.groups.size());
    for (const auto& g : h.groups) {
        groups_.emplace(g.id, &g);
    }
}

namespace {

template <typename Map, typename Key>
auto lookup(const Map& map, const Key& key) -> typename Map::mapped_type {
    auto it = map.find(key);
    return it == map.end() ? nullptr : it->second;
}

} // namespace

const PciDevice* HostIndex::pci(std::string_view address) const {
    return lookup(pci_, address);
}

const VdpaDevice* HostIndex::vdpa(std::string_view name) const {
    return lookup(vdpa_, name);
}

const SiovQueue* HostIndex::queue(std::string_view name) const {
    return lookup(queues_, name);
}

const IommuGroup* HostIndex::group(uint32_t id) const {
    return lookup(groups_, id);
}

const IommuGroup* HostIndex::groupOf(const PciDevice& dev) const {
    return dev.group ? group(*dev.group) : nullptr;
}

std::span<const std::string_view> HostIndex::childrenOf(std::string_view address) const {
    auto it = children_.find(address);
    if (it == children_.end()) {
        return {};
    }
    return it->second;
}

bool HostIndex::has(std::string_view id) const {
    return pci_.count(id) != 0 || vdpa_.count(id) != 0 || queues_.count(id) != 0;
}

uint32_t HostIndex::pasidWidth(const PciDevice& dev) const {
    return core::pasidWidth(dev, dev.physfn.empty() ? nullptr : pci(dev.physfn), host_->units);
}

} // namespace svad::core
