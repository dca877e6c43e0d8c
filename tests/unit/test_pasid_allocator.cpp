// Unit tests of the host-wide PASID allocator, with a property test against
// a plain reference model.
#include "svad/core/pasid_allocator.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using svad::core::PasidAllocator;
using svad::core::PasidResult;
using svad::core::PasidStatus;

TEST(PasidAllocator, StartsEmpty) {
    PasidAllocator a;
    EXPECT_EQ(a.inUse(), 0u);
    EXPECT_EQ(a.count("vm"), 0u);
    EXPECT_FALSE(a.holder(1));
    ASSERT_EQ(a.freeIntervals().size(), 1u);
    EXPECT_EQ(a.freeIntervals().begin()->first, 1u);
    EXPECT_EQ(a.freeIntervals().begin()->second, 0xFFFFFu);
    EXPECT_EQ(a.quota("vm"), PasidAllocator::kUnlimited);
}

TEST(PasidAllocator, HighestFirstBelowTheWidth) {
    PasidAllocator a;
    for (uint32_t want = PasidAllocator::kLast; want > PasidAllocator::kLast - 10; --want) {
        PasidResult r = a.allocate(20, "vm");
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r.pasid, want);
    }
    EXPECT_TRUE(a.release(0xFFFFB, "vm"));
    EXPECT_TRUE(a.release(0xFFFFD, "vm"));
    EXPECT_EQ(a.allocate(20, "vm").pasid, 0xFFFFDu);
    EXPECT_EQ(a.allocate(20, "vm").pasid, 0xFFFFBu);
    EXPECT_EQ(a.allocate(20, "vm").pasid, PasidAllocator::kLast - 10);
    // From the top of a narrower range, splitting the free interval around it.
    EXPECT_EQ(a.allocate(4, "vm").pasid, 15u);
    EXPECT_EQ(a.allocate(8, "vm").pasid, 255u);
    EXPECT_EQ(a.allocate(4, "vm").pasid, 14u);
    EXPECT_FALSE(a.holder(0));
}

TEST(PasidAllocator, WidthTwoGivesThreeToOne) {
    PasidAllocator a;
    EXPECT_EQ(a.allocate(2, "a").pasid, 3u);
    EXPECT_EQ(a.allocate(2, "b").pasid, 2u);
    EXPECT_EQ(a.allocate(2, "a").pasid, 1u);
    PasidResult r = a.allocate(2, "a");
    EXPECT_FALSE(r);
    EXPECT_EQ(r.status, PasidStatus::Exhausted);
    // A wider device still finds room above.
    EXPECT_EQ(a.allocate(3, "a").pasid, 7u);
    EXPECT_TRUE(a.release(2, "b"));
    EXPECT_EQ(a.allocate(2, "c").pasid, 2u);
}

// Wide devices take from the top, so the low PASIDs a narrow device needs stay
// free however many the wide ones hold.
TEST(PasidAllocator, NarrowDeviceServedAfterWideDevicesTookMany) {
    PasidAllocator a;
    for (int i = 0; i < 20000; ++i) {
        ASSERT_TRUE(a.allocate(20, "wide").ok());
        ASSERT_TRUE(a.allocate(16, "wide").ok());
    }
    for (uint32_t want = 15; want >= 1; --want) {
        PasidResult r = a.allocate(4, "narrow");
        ASSERT_TRUE(r.ok()) << "PASID " << want << ": " << svad::core::toString(r.status);
        EXPECT_EQ(r.pasid, want);
    }
    EXPECT_EQ(a.allocate(4, "narrow").status, PasidStatus::Exhausted);
    EXPECT_EQ(a.count("narrow"), 15u);
}

TEST(PasidAllocator, WidthOneGivesOnlyOne) {
    PasidAllocator a;
    EXPECT_EQ(a.allocate(1, "a").pasid, 1u);
    EXPECT_EQ(a.allocate(1, "a").status, PasidStatus::Exhausted);
}

TEST(PasidAllocator, WidthZeroIsItsOwnFailure) {
    PasidAllocator a;
    a.setQuota("a", 0); // the width check comes first
    PasidResult r = a.allocate(0, "a");
    EXPECT_EQ(r.status, PasidStatus::NoWidth);
    EXPECT_STREQ(svad::core::toString(r.status), "no-width");
    EXPECT_EQ(a.inUse(), 0u);
}

TEST(PasidAllocator, WidthAboveTwentyIsClamped) {
    PasidAllocator a;
    a.setDefaultQuota(PasidAllocator::kUnlimited);
    EXPECT_EQ(a.allocate(32, "a").pasid, PasidAllocator::kLast);
    EXPECT_EQ(a.allocate(255, "a").pasid, PasidAllocator::kLast - 1);
}

TEST(PasidAllocator, WholeSpaceExhaustsAtTwentyBits) {
    PasidAllocator a;
    for (uint32_t i = PasidAllocator::kLast; i >= 1; --i) {
        ASSERT_EQ(a.allocate(20, "vm").pasid, i);
    }
    EXPECT_EQ(a.allocate(20, "vm").status, PasidStatus::Exhausted);
    EXPECT_EQ(a.inUse(), PasidAllocator::kLast);
    EXPECT_TRUE(a.freeIntervals().empty());
    EXPECT_TRUE(a.release(0x80000, "vm"));
    EXPECT_EQ(a.allocate(20, "vm").pasid, 0x80000u);
    EXPECT_EQ(a.releaseAll("vm"), PasidAllocator::kLast);
    ASSERT_EQ(a.freeIntervals().size(), 1u);
    EXPECT_EQ(a.freeIntervals().begin()->second, PasidAllocator::kLast);
}

TEST(PasidAllocator, QuotaPerVmAndDefault) {
    PasidAllocator a;
    a.setDefaultQuota(2);
    a.setQuota("big", 3);
    EXPECT_TRUE(a.allocate(20, "small").ok());
    EXPECT_TRUE(a.allocate(20, "small").ok());
    PasidResult r = a.allocate(20, "small");
    EXPECT_EQ(r.status, PasidStatus::QuotaExceeded);
    EXPECT_STREQ(svad::core::toString(r.status), "quota-exceeded");
    for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(a.allocate(20, "big").ok());
    }
    EXPECT_EQ(a.allocate(20, "big").status, PasidStatus::QuotaExceeded);
    EXPECT_EQ(a.count("small"), 2u);
    EXPECT_EQ(a.count("big"), 3u);
    // Lowering a quota takes nothing away.
    a.setQuota("big", 1);
    EXPECT_EQ(a.count("big"), 3u);
    EXPECT_EQ(a.allocate(20, "big").status, PasidStatus::QuotaExceeded);
    a.clearQuota("big");
    EXPECT_EQ(a.quota("big"), 2u);
    // Quota is checked before exhaustion.
    a.setQuota("full", 0);
    EXPECT_EQ(a.allocate(1, "full").status, PasidStatus::QuotaExceeded);
}

TEST(PasidAllocator, ForeignReleaseRefused) {
    PasidAllocator a;
    const uint32_t p = a.allocate(20, "a").pasid;
    EXPECT_FALSE(a.release(p, "b"));
    EXPECT_EQ(a.holder(p), "a");
    EXPECT_EQ(a.count("a"), 1u);
    EXPECT_FALSE(a.release(p + 1, "a")); // never allocated
    EXPECT_FALSE(a.release(0, "a"));
    EXPECT_FALSE(a.release(0xFFFFFFFFu, "a"));
    EXPECT_TRUE(a.release(p, "a"));
    EXPECT_FALSE(a.release(p, "a")); // twice
    EXPECT_FALSE(a.holder(p));
    EXPECT_EQ(a.inUse(), 0u);
}

TEST(PasidAllocator, ReleaseAllAndHeld) {
    PasidAllocator a;
    a.allocate(20, "a");
    a.allocate(20, "b");
    a.allocate(20, "a");
    EXPECT_EQ(a.held("a"), (std::vector<uint32_t>{0xFFFFD, 0xFFFFF}));
    EXPECT_EQ(a.releaseAll("a"), 2u);
    EXPECT_EQ(a.releaseAll("a"), 0u);
    EXPECT_EQ(a.count("a"), 0u);
    EXPECT_EQ(a.inUse(), 1u);
    EXPECT_EQ(a.holder(0xFFFFE), "b");
    EXPECT_EQ(a.allocate(20, "c").pasid, 0xFFFFFu);
}

// ~20k random operations across VMs, widths and quotas, checked step by step
// against a reference model that scans down for the highest free PASID
// below the width.
TEST(PasidAllocator, PropertyAgainstReferenceModel) {
    std::mt19937 rng(0x5ad1); // fixed seed: reproducible
    const std::vector<std::string> vms = {"vm-a", "vm-b", "vm-c", "vm-d"};
    const std::vector<uint32_t> widths = {0, 1, 2, 3, 4, 6, 8, 10, 20};

    PasidAllocator a;
    a.setDefaultQuota(400);
    a.setQuota("vm-a", 25);
    a.setQuota("vm-b", 1000);

    std::map<uint32_t, std::string> ref; // pasid -> holder
    std::map<std::string, uint32_t> quota = {
        {"vm-a", 25}, {"vm-b", 1000}, {"vm-c", 400}, {"vm-d", 400}};
    auto refCount = [&ref](const std::string& vm) {
        uint32_t n = 0;
        for (const auto& [p, h] : ref) {
            n += h == vm;
        }
        return n;
    };
    auto refHighestFree = [&ref](uint32_t width) {
        uint32_t p = (uint32_t{1} << width) - 1;
        while (p > 0 && ref.count(p) != 0) {
            --p;
        }
        return p; // 0: none
    };

    size_t oks = 0, exhausted = 0, quotaHits = 0, noWidth = 0, releases = 0, refused = 0;
    for (int step = 0; step < 20000; ++step) {
        const std::string& vm = vms[rng() % vms.size()];
        const unsigned op = rng() % 100;
        if (op < 55) {
            const uint32_t w = widths[rng() % widths.size()];
            const PasidResult r = a.allocate(w, vm);
            PasidStatus want;
            uint32_t wantPasid = 0;
            if (w == 0) {
                want = PasidStatus::NoWidth;
            } else if (refCount(vm) >= quota[vm]) {
                want = PasidStatus::QuotaExceeded;
            } else {
                wantPasid = refHighestFree(w);
                want = wantPasid != 0 ? PasidStatus::Ok : PasidStatus::Exhausted;
            }
            ASSERT_EQ(r.status, want) << "step " << step << " width " << w << " vm " << vm;
            if (r.ok()) {
                ASSERT_EQ(r.pasid, wantPasid) << "step " << step;
                ASSERT_NE(r.pasid, 0u);
                ASSERT_LT(r.pasid, uint32_t{1} << w);
                ASSERT_FALSE(ref.count(r.pasid)) << "duplicate " << r.pasid;
                ref[r.pasid] = vm;
                ++oks;
            } else {
                exhausted += r.status == PasidStatus::Exhausted;
                quotaHits += r.status == PasidStatus::QuotaExceeded;
                noWidth += r.status == PasidStatus::NoWidth;
            }
        } else if (op < 95) {
            // Release: mostly a PASID someone holds, by its holder or not.
            uint32_t p;
            if (!ref.empty() && rng() % 8 != 0) {
                auto it = ref.begin();
                std::advance(it, rng() % ref.size());
                p = it->first;
            } else {
                p = rng() % 64;
            }
            const std::string& who = rng() % 4 == 0 ? vms[rng() % vms.size()] : vm;
            auto it = ref.find(p);
            const bool want = it != ref.end() && it->second == who;
            ASSERT_EQ(a.release(p, who), want) << "step " << step << " pasid " << p;
            if (want) {
                ref.erase(it);
                ++releases;
            } else {
                ++refused;
            }
        } else if (op < 98) {
            const uint32_t q = rng() % 60;
            a.setQuota(vm, q);
            quota[vm] = q;
        } else {
            uint32_t n = 0;
            for (auto it = ref.begin(); it != ref.end();) {
                if (it->second == vm) {
                    it = ref.erase(it);
                    ++n;
                } else {
                    ++it;
                }
            }
            ASSERT_EQ(a.releaseAll(vm), n);
        }

        // Consistency after every step.
        ASSERT_EQ(a.inUse(), ref.size());
        for (const auto& v : vms) {
            ASSERT_EQ(a.count(v), refCount(v)) << v;
        }
        if (step % 97 == 0) {
            for (const auto& [p, h] : ref) {
                ASSERT_EQ(a.holder(p), h);
            }
            // The free intervals are the complement of the held PASIDs.
            uint64_t freeCount = 0;
            uint32_t prevLast = 0;
            for (const auto& [start, last] : a.freeIntervals()) {
                ASSERT_LE(start, last);
                ASSERT_GT(start, prevLast + (prevLast ? 1 : 0)) << "adjacent or overlapping";
                ASSERT_FALSE(ref.count(start));
                ASSERT_FALSE(ref.count(last));
                freeCount += last - start + 1;
                prevLast = last;
            }
            ASSERT_EQ(freeCount + ref.size(), PasidAllocator::kLast);
        }
    }
    // The run covered every outcome.
    EXPECT_GT(oks, 1000u);
    EXPECT_GT(exhausted, 50u);
    EXPECT_GT(quotaHits, 50u);
    EXPECT_GT(noWidth, 50u);
    EXPECT_GT(releases, 1000u);
    EXPECT_GT(refused, 100u);
}

TEST(PasidAllocator, ClaimTakesThatVeryPasidOnce) {
    PasidAllocator a;
    EXPECT_TRUE(a.claim(0x1234, "vm-a"));
    EXPECT_FALSE(a.claim(0x1234, "vm-b")) << "held already";
    EXPECT_FALSE(a.claim(0, "vm-a")) << "PASID 0 is reserved";
    EXPECT_FALSE(a.claim(PasidAllocator::kLast + 1, "vm-a"));
    EXPECT_EQ(a.holder(0x1234), "vm-a");
    EXPECT_EQ(a.count("vm-a"), 1U);
    // The free intervals around it are whole: the highest below 2^13 is still 0x1fff,
    // and allocation never hands out the claimed one.
    EXPECT_EQ(a.allocate(13, "vm-b").pasid, 0x1fffU);
    EXPECT_TRUE(a.claim(0x1ffe, "vm-b"));
    EXPECT_EQ(a.allocate(13, "vm-b").pasid, 0x1ffdU);
    EXPECT_TRUE(a.release(0x1234, "vm-a"));
    EXPECT_TRUE(a.claim(0x1234, "vm-b"));
    const size_t held = a.inUse();
    EXPECT_EQ(held, 4U);
}

} // namespace
