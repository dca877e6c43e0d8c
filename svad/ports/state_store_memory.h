// A StateStore in memory: for the tests, and for a run of svad with no state
// directory (then a restart loses everything). Same contract as the SQLite
// store, errors included.
#pragma once

#include "svad/ports/state_store.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace svad::ports {

class MemoryStateStore : public StateStore {
public:
    uint64_t takeContextId() override { return next_++; }

    void putContext(const StoredContext& ctx) override {
        contexts_[ctx.id] = ctx;
        next_ = std::max(next_, ctx.id + 1);
    }

    void removeContext(uint64_t id) override { contexts_.erase(id); }

    void putPasid(uint64_t context, uint32_t pasid, const std::string& device) override {
        find(context, "putPasid").pasids[pasid] = device;
    }

    void removePasid(uint64_t context, uint32_t pasid) override {
        auto it = contexts_.find(context);
        if (it != contexts_.end()) {
            it->second.pasids.erase(pasid);
        }
    }

    void putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) override {
        find(context, "putVirtualId").virtualIds[device] = virtId;
    }

    void putAutoBind(const AutoBindRecord& record) override { autoBinds_[record.address] = record; }

    void removeAutoBind(const std::string& address) override { autoBinds_.erase(address); }

    std::vector<StoredContext> contexts() override {
        std::vector<StoredContext> out;
        out.reserve(contexts_.size());
        for (const auto& [id, ctx] : contexts_) {
            out.push_back(ctx);
        }
        return out;
    }

    std::vector<AutoBindRecord> autoBinds() override {
        std::vector<AutoBindRecord> out;
        out.reserve(autoBinds_.size());
        for (const auto& [address, record] : autoBinds_) {
            out.push_back(record);
        }
        return out;
    }

    uint64_t peekNextContextId() override { return next_; }

    void raiseNextContextId(uint64_t atLeast) override { next_ = std::max(next_, atLeast); }

private:
    StoredContext& find(uint64_t context, const char* operation) {
        auto it = contexts_.find(context);
        if (it == contexts_.end()) {
            throw StateError(StateError::Code::Constraint,
                             std::string(operation) + "(" + std::to_string(context) + ")",
                             "no context " + std::to_string(context) + " is stored");
        }
        return it->second;
    }

    uint64_t next_ = 1;
    std::map<uint64_t, StoredContext> contexts_;
    std::map<std::string, AutoBindRecord> autoBinds_;
};

} // namespace svad::ports
