#include "svad/core/pasid_allocator.h"

#include <algorithm>
#include <iterator>

namespace svad::core {

const char* toString(PasidStatus status) {
    switch (status) {
    case PasidStatus::Ok:
        return "ok";
    case PasidStatus::NoWidth:
        return "no-width";
    case PasidStatus::Exhausted:
        return "exhausted";
    case PasidStatus::QuotaExceeded:
        return "quota-exceeded";
    }
    return "unknown";
}

PasidAllocator::PasidAllocator() {
    free_.emplace(kFirst, kLast);
}

PasidResult PasidAllocator::allocate(uint32_t widthBits, const std::string& vm) {
    if (widthBits == 0) {
        return {PasidStatus::NoWidth, 0};
    }
    if (count(vm) >= quota(vm)) {
        return {PasidStatus::QuotaExceeded, 0};
    }
    const uint32_t top = (uint32_t{1} << std::min(widthBits, kMaxWidth)) - 1; // inclusive
    // The interval holding the highest free PASID <= top: the last one starting at or below it.
    auto it = free_.upper_bound(top);
    if (it == free_.begin()) {
        return {PasidStatus::Exhausted, 0};
    }
    it = std::prev(it);
    const uint32_t start = it->first;
    const uint32_t last = it->second;
    const uint32_t pasid = std::min(last, top);
    if (pasid == start) {
        it = free_.erase(it);
    } else {
        it->second = pasid - 1;
        it = std::next(it);
    }
    if (pasid < last) {
        free_.emplace_hint(it, pasid + 1, last);
    }
    holders_.emplace(pasid, vm);
    byVm_[vm].insert(pasid);
    return {PasidStatus::Ok, pasid};
}

bool PasidAllocator::claim(uint32_t pasid, const std::string& vm) {
    if (pasid < kFirst || pasid > kLast) {
        return false;
    }
    auto it = free_.upper_bound(pasid);
    if (it == free_.begin()) {
        return false;
    }
    it = std::prev(it);
    const uint32_t start = it->first;
    const uint32_t last = it->second;
    if (pasid > last) {
        return false; // held already
    }
    // Split [start, last] around pasid.
    free_.erase(it);
    if (start < pasid) {
        free_.emplace(start, pasid - 1);
    }
    if (pasid < last) {
        free_.emplace(pasid + 1, last);
    }
    holders_.emplace(pasid, vm);
    byVm_[vm].insert(pasid);
    return true;
}

bool PasidAllocator::release(uint32_t pasid, const std::string& vm) {
    auto h = holders_.find(pasid);
    if (h == holders_.end() || h->second != vm) {
        return false;
    }
    holders_.erase(h);
    auto v = byVm_.find(vm);
    v->second.erase(pasid);
    if (v->second.empty()) {
        byVm_.erase(v);
    }
    giveBack(pasid);
    return true;
}

size_t PasidAllocator::releaseAll(const std::string& vm) {
    auto v = byVm_.find(vm);
    if (v == byVm_.end()) {
        return 0;
    }
    const std::set<uint32_t> pasids = std::move(v->second);
    byVm_.erase(v);
    for (uint32_t p : pasids) {
        holders_.erase(p);
        giveBack(p);
    }
    return pasids.size();
}

// Inserts [pasid, pasid] into the free intervals, merging with neighbours.
void PasidAllocator::giveBack(uint32_t pasid) {
    auto next = free_.upper_bound(pasid); // first interval starting after pasid
    uint32_t start = pasid;
    uint32_t last = pasid;
    if (next != free_.begin()) {
        auto prev = std::prev(next);
        if (prev->second + 1 == pasid) {
            start = prev->first;
            free_.erase(prev);
        }
    }
    if (next != free_.end() && next->first == pasid + 1) {
        last = next->second;
        next = free_.erase(next);
    }
    free_.emplace_hint(next, start, last);
}

uint32_t PasidAllocator::quota(const std::string& vm) const {
    auto it = quotas_.find(vm);
    return it == quotas_.end() ? defaultQuota_ : it->second;
}

uint32_t PasidAllocator::count(const std::string& vm) const {
    auto it = byVm_.find(vm);
    return it == byVm_.end() ? 0 : static_cast<uint32_t>(it->second.size());
}

std::optional<std::string> PasidAllocator::holder(uint32_t pasid) const {
    auto it = holders_.find(pasid);
    if (it == holders_.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::vector<uint32_t> PasidAllocator::held(const std::string& vm) const {
    auto it = byVm_.find(vm);
    if (it == byVm_.end()) {
        return {};
    }
    return {it->second.begin(), it->second.end()};
}

} // namespace svad::core
