// Discovery: reads the host's IOMMU topology through the Sysfs port and
// returns a snapshot. Pure with respect to the port: no other I/O.
#pragma once

#include "svad/core/model.h"
#include "svad/ports/sysfs.h"

#include <functional>
#include <memory>
#include <set>
#include <string>

namespace svad::core {

Host discover(const ports::Sysfs& sysfs);

// The same scan with `threads` readers, each from `makeSysfs` (a reader is
// used by one thread at a time). Reading sysfs is syscall-bound, so a second
// reader roughly halves a large host's scan on two cores.
using SysfsFactory = std::function<std::unique_ptr<ports::Sysfs>()>;
Host discover(const SysfsFactory& makeSysfs, unsigned threads);

// What changed on a live host (from hotplug events), for a partial re-read.
struct HostChanges {
    std::set<std::string> pci;      // PCI addresses added, removed, bound, unbound or changed
    bool pciAddedOrRemoved = false; // one of them came or went (IOMMU units list theirs)
    bool units = false;             // an IOMMU unit came or went
    bool queues = false;            // an idxd device or work queue changed
    bool vdpa = false;              // a vDPA device came, went or was (un)bound
    bool empty() const { return pci.empty() && !units && !queues && !vdpa; }
};

// A new host from `previous` and the changes: only the PCI functions named
// (with their PF or VFs) and the groups holding them are read again; group
// viability is recomputed; units, and the lists of functions and groups, are
// read again only when a function came or went; queues and vDPA devices below
// the functions are read again (all of them after an event of their own), the
// others kept without reading even their links. Everything else is copied.
Host refresh(const ports::Sysfs& sysfs, const Host& previous, const HostChanges& changes);

} // namespace svad::core
