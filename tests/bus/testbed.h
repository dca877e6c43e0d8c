// A umockdev testbed for the hotplug tests: a sysfs tree that svad reads and
// uevents that reach svad's real libudev monitor. The test runs under
// umockdev-wrapper, so the processes it starts inherit the preload library
// and the testbed (UMOCKDEV_DIR).
#pragma once

#include "svad/hostgen/hostgen.h"

#include <memory>
#include <string>
#include <vector>

namespace svad::test {

class Testbed {
public:
    // Throws std::runtime_error outside umockdev-wrapper (no uevent would arrive).
    Testbed();
    ~Testbed();
    Testbed(const Testbed&) = delete;
    Testbed& operator=(const Testbed&) = delete;

    // The testbed's root, empty: SvadFixture writes the host tree into it.
    const std::string& root() const { return root_; }
    // Sends a uevent as the kernel would, e.g. ("/sys/devices/pci0000:6a/0000:6a:02.0", "add").
    void uevent(const std::string& devpath, const std::string& action);
    // Puts the host as it is after a change in place of the tree: generated beside, then
    // swapped in. `keep` (device paths) stay as directories only, so that a "remove"
    // uevent can still name them (the kernel sends it while the device is going).
    void replaceTree(const hostgen::HostSpec& host, const std::vector<std::string>& keep = {});

private:
    struct Impl; // the UMockdevTestbed
    std::unique_ptr<Impl> impl_;
    std::string root_;
    int generation_ = 0;
};

// The sysfs device path of a PCI function of a generated tree (a VF's is below its PF's bus).
std::string pciDevpath(const std::string& address, const std::string& physfn = {});

} // namespace svad::test
