#include "svad/core/rate_limit.h"

#include <algorithm>

namespace svad::core {

RateLimit::Verdict RateLimit::admit(uint64_t key, Clock::time_point now) {
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
        if (buckets_.size() >= maxKeys_) {
            auto oldest = std::min_element(
                buckets_.begin(), buckets_.end(),
                [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
            buckets_.erase(oldest);
        }
        it = buckets_.emplace(key, Bucket{burst_, now, 0}).first;
    }
    Bucket& b = it->second;
    const double elapsed = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(burst_, b.tokens + std::max(0.0, elapsed) * perSecond_);
    b.last = now;
    if (b.tokens < 1) {
        ++b.suppressed;
        return {};
    }
    b.tokens -= 1;
    Verdict v{true, b.suppressed};
    b.suppressed = 0;
    return v;
}

} // namespace svad::core
