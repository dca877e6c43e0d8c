// The host-wide PASID space, shared by every VM svad serves: PASIDs
// [1, 2^20 - 1] (0 is reserved: it names the requester ID's own address
// space). A device can only use PASIDs below 2^width, where width is the
// smaller of the device's and its IOMMU unit's PASID widths, so allocate()
// takes that width and hands out the highest free PASID under 2^width: a
// 20-bit device takes from the top of the whole space down, a 4-bit one from
// 15 down, so wide devices leave the low PASIDs, which are all a narrow
// device can use, to the narrow ones.
//
// Every VM has a quota (the default one unless set per VM). Free PASIDs are
// kept as disjoint intervals in a std::map (start -> last), so allocate()
// and release() are O(log n). No I/O, no exceptions on normal failures, not
// thread-safe: the caller serialises.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace svad::core {

enum class PasidStatus : uint8_t {
    Ok = 0,
    NoWidth = 1,       // widthBits was 0: the device (or its unit) has no PASID
    Exhausted = 2,     // every PASID below 2^widthBits is held
    QuotaExceeded = 3, // the VM already holds its quota
};

// "ok", "no-width", "exhausted", "quota-exceeded"
const char* toString(PasidStatus status);

struct PasidResult {
    PasidStatus status = PasidStatus::Exhausted;
    uint32_t pasid = 0; // meaningful when ok()

    bool ok() const { return status == PasidStatus::Ok; }
    explicit operator bool() const { return ok(); }
};

class PasidAllocator {
public:
    static constexpr uint32_t kMaxWidth = 20;
    static constexpr uint32_t kFirst = 1;                             // 0 is reserved
    static constexpr uint32_t kLast = (uint32_t{1} << kMaxWidth) - 1; // 0xFFFFF
    static constexpr uint32_t kUnlimited = UINT32_MAX;

    PasidAllocator();

    // The highest free PASID below 2^min(widthBits, 20), held for `vm` from
    // then on. Checks, in this order: width 0, the VM's quota, exhaustion.
    PasidResult allocate(uint32_t widthBits, const std::string& vm);
    // Gives `pasid` back; false (and nothing changes) unless `vm` holds it.
    bool release(uint32_t pasid, const std::string& vm);
    // Takes this very PASID for `vm` (one held before a restart), whatever the
    // quota; false when it is out of range or held already.
    bool claim(uint32_t pasid, const std::string& vm);
    // Gives back every PASID `vm` holds; returns how many.
    size_t releaseAll(const std::string& vm);

    // Quotas: how many PASIDs one VM may hold at once. The default is
    // kUnlimited. Lowering a quota below what a VM holds takes nothing
    // away; its next allocation fails.
    void setDefaultQuota(uint32_t n) { defaultQuota_ = n; }
    uint32_t defaultQuota() const { return defaultQuota_; }
    void setQuota(const std::string& vm, uint32_t n) { quotas_[vm] = n; }
    void clearQuota(const std::string& vm) { quotas_.erase(vm); }
    uint32_t quota(const std::string& vm) const;

    uint32_t count(const std::string& vm) const; // PASIDs `vm` holds
    uint32_t inUse() const { return static_cast<uint32_t>(holders_.size()); }
    std::optional<std::string> holder(uint32_t pasid) const;
    std::vector<uint32_t> held(const std::string& vm) const; // ascending

    // The free intervals, lowest first (for tests and diagnostics).
    const std::map<uint32_t, uint32_t>& freeIntervals() const { return free_; }

private:
    void giveBack(uint32_t pasid);

    std::map<uint32_t, uint32_t> free_;                 // start -> last, disjoint, not adjacent
    std::unordered_map<uint32_t, std::string> holders_; // pasid -> vm
    std::unordered_map<std::string, std::set<uint32_t>> byVm_;
    std::unordered_map<std::string, uint32_t> quotas_;
    uint32_t defaultQuota_ = kUnlimited;
};

} // namespace svad::core
