// A StateStore that several threads may call: each call of the store it
// wraps runs under one mutex. svad's engine calls the store on its loop, the
// plugin host records rebinds from the workers that prepare devices and from
// its release thread.
#pragma once

#include "svad/ports/state_store.h"

#include <mutex>
#include <string>
#include <vector>

namespace svad::ports {

class LockedStateStore final : public StateStore {
public:
    explicit LockedStateStore(StateStore& inner) : inner_(inner) {}

    uint64_t takeContextId() override {
        std::lock_guard lock(mu_);
        return inner_.takeContextId();
    }
    void putContext(const StoredContext& ctx) override {
        std::lock_guard lock(mu_);
        inner_.putContext(ctx);
    }
    void removeContext(uint64_t id) override {
        std::lock_guard lock(mu_);
        inner_.removeContext(id);
    }
    void putPasid(uint64_t context, uint32_t pasid, const std::string& device) override {
        std::lock_guard lock(mu_);
        inner_.putPasid(context, pasid, device);
    }
    void removePasid(uint64_t context, uint32_t pasid) override {
        std::lock_guard lock(mu_);
        inner_.removePasid(context, pasid);
    }
    void putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) override {
        std::lock_guard lock(mu_);
        inner_.putVirtualId(context, device, virtId);
    }
    void putAutoBind(const AutoBindRecord& record) override {
        std::lock_guard lock(mu_);
        inner_.putAutoBind(record);
    }
    void removeAutoBind(const std::string& address) override {
        std::lock_guard lock(mu_);
        inner_.removeAutoBind(address);
    }
    std::vector<StoredContext> contexts() override {
        std::lock_guard lock(mu_);
        return inner_.contexts();
    }
    std::vector<AutoBindRecord> autoBinds() override {
        std::lock_guard lock(mu_);
        return inner_.autoBinds();
    }
    uint64_t peekNextContextId() override {
        std::lock_guard lock(mu_);
        return inner_.peekNextContextId();
    }
    void raiseNextContextId(uint64_t atLeast) override {
        std::lock_guard lock(mu_);
        inner_.raiseNextContextId(atLeast);
    }

private:
    StateStore& inner_;
    std::mutex mu_;
};

} // namespace svad::ports
