#include "svad/core/rate_limit.h"

#include <gtest/gtest.h>

namespace svad::core {
namespace {

using namespace std::chrono_literals;

TEST(RateLimit, ABurstThenOneASecondWithTheCountOfWhatWasHeldBack) {
    RateLimit limit(10, 1);
    const auto t0 = RateLimit::Clock::time_point{} + 1000s;
    int logged = 0;
    for (int i = 0; i < 1000; ++i) {
        auto v = limit.admit(42, t0);
        logged += v.log ? 1 : 0;
        EXPECT_EQ(v.suppressed, 0U);
    }
    EXPECT_EQ(logged, 10);
    // A second later one record goes out and says how many were held back.
    auto v = limit.admit(42, t0 + 1s);
    EXPECT_TRUE(v.log);
    EXPECT_EQ(v.suppressed, 990U);
    EXPECT_FALSE(limit.admit(42, t0 + 1s).log);
    // Another key has its own bucket.
    EXPECT_TRUE(limit.admit(7, t0 + 1s).log);
    // Quiet for a while: the burst is back, not more.
    int again = 0;
    for (int i = 0; i < 100; ++i) {
        again += limit.admit(42, t0 + 1h).log ? 1 : 0;
    }
    EXPECT_EQ(again, 10);
}

TEST(RateLimit, KeysAreBoundedAndForgettingOnlyLetsThrough) {
    RateLimit limit(1, 1, 4);
    const auto t0 = RateLimit::Clock::time_point{} + 1000s;
    for (uint64_t k = 0; k < 100; ++k) {
        EXPECT_TRUE(limit.admit(k, t0).log) << k;
        EXPECT_FALSE(limit.admit(k, t0).log) << k;
    }
}

} // namespace
} // namespace svad::core
