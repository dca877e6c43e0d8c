// A DeviceBroker for engine tests: allows every device and opens it through
// the kernel port, as a plugin would (a work queue is not opened). It records what it was asked, so
// that tests can check the engine consults it and releases what it prepared.
#pragma once

#include "svad/core/policy.h"

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <vector>

namespace svad::core::testing {

class OpenBroker final : public DeviceBroker {
public:
    explicit OpenBroker(ports::Kernel& kernel) : kernel_(kernel) {}

    // Devices this broker refuses (by id), and the reason it gives.
    std::vector<std::string> deny;
    std::vector<std::string> decided;  // device ids, in order
    std::vector<std::string> prepared; // device ids, in order
    std::vector<std::string> released; // device ids, in order

    PolicyDecision decide(const PolicyQuery& q) override {
        decided.push_back(q.deviceId);
        PolicyDecision d;
        bool refused = std::find(deny.begin(), deny.end(), q.deviceId) != deny.end();
        d.verdicts.push_back(PluginVerdict{"test", refused ? Verdict::Deny : Verdict::Allow,
                                           refused ? "on the test's deny list" : "test allows"});
        d.allowed = !refused;
        d.plugin = "test";
        d.reason = d.verdicts.back().reason;
        return d;
    }

    Outcome<PreparedDevice> prepare(const std::string& /*plugin*/, const PolicyQuery& q) override {
        PreparedDevice out;
        auto failed = [](const ports::KernelError& e) {
            return Failure{names::errorFromErrno(e.err), e.message, {}};
        };
        if (q.kind == DeviceKind::Pci) {
            auto fd = kernel_.openVfioDevice(q.pci->vfioDevice);
            if (!fd) {
                return failed(fd.error());
            }
            out.fd = std::move(fd.value());
        } else if (q.kind == DeviceKind::Vdpa) {
            auto fd = kernel_.openVhostVdpa(q.vdpa->vhostDevice);
            if (!fd) {
                return failed(fd.error());
            }
            auto groups = kernel_.vdpaGroupNum(fd->get());
            if (!groups) {
                return failed(groups.error());
            }
            auto spaces = kernel_.vdpaAsNum(fd->get());
            if (!spaces) {
                return failed(spaces.error());
            }
            out.fd = std::move(fd.value());
            out.vdpaGroups = groups.value();
            out.vdpaAddressSpaces = spaces.value();
        }
        // A queue is not opened (plugin ABI 4): the engine grants the owner its node.
        prepared.push_back(q.deviceId);
        return out;
    }

    void release(const std::string& /*plugin*/, const PolicyQuery& q) override {
        released.push_back(q.deviceId);
    }

private:
    ports::Kernel& kernel_;
};

// A configuration whose default policy allows every device to everyone.
inline std::shared_ptr<const Config> allowAllConfig() {
    auto c = std::make_shared<Config>();
    c->defaultPolicy = RuleAction::Allow;
    c->defaultPasidQuota = UINT32_MAX; // the allocator's own default: unlimited
    return c;
}

} // namespace svad::core::testing
