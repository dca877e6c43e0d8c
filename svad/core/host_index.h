// A host with its lookups by name: what a request resolves its devices
// against. Built once when the engine's host is set, then read by every
// request: finding a PCI function, vDPA device, work queue or IOMMU group by
// its name, or the vDPA devices and queues living on a function, costs the same
// on a host of sixteen thousand functions as on one of ten.
//
// The index shares ownership of its host (a const Host that never moves), so
// every pointer it hands out stays valid as long as the index, or anything
// holding the host, lives; a new host is a new index.
#pragma once

#include "svad/core/model.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace svad::core {

class HostIndex {
public:
    // An empty host.
    HostIndex();
    explicit HostIndex(std::shared_ptr<const Host> host);
    HostIndex(const HostIndex&) = delete;
    HostIndex& operator=(const HostIndex&) = delete;

    const Host& host() const { return *host_; }
    // The same host, to keep beyond this index (a worker reads it while the next is set).
    const std::shared_ptr<const Host>& sharedHost() const { return host_; }

    // Null when the host has no such object. A name the host lists twice
    // (discovery never does) finds the first, as a walk of the list would.
    const PciDevice* pci(std::string_view address) const;
    const VdpaDevice* vdpa(std::string_view name) const;
    const SiovQueue* queue(std::string_view name) const;
    const IommuGroup* group(uint32_t id) const;
    // The function's IOMMU group; null when it has none or the host lacks it.
    const IommuGroup* groupOf(const PciDevice& dev) const;
    // The vDPA devices and work queues whose parent is this function, in the
    // host's order (queues first); empty for an unknown address.
    std::span<const std::string_view> childrenOf(std::string_view address) const;
    // Whether a PCI function, vDPA device or work queue of this name is on the host.
    bool has(std::string_view id) const;
    // The usable PASID width of a PCI function on this host (a VF: its PF's).
    uint32_t pasidWidth(const PciDevice& dev) const;

private:
    void build();

    std::shared_ptr<const Host> host_;
    // Keys view the host's own strings.
    std::unordered_map<std::string_view, const PciDevice*> pci_;
    std::unordered_map<std::string_view, const VdpaDevice*> vdpa_;
    std::unordered_map<std::string_view, const SiovQueue*> queues_;
    std::unordered_map<uint32_t, const IommuGroup*> groups_;
    std::unordered_map<std::string_view, std::vector<std::string_view>> children_;
};

} // namespace svad::core
