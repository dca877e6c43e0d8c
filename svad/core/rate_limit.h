// A bound on how often one source may fill the log: refusals of callers who
// may not call at all cost a record each, and a bus that lets anyone call
// must not let anyone write the journal at will. Per key (a caller's uid), a
// burst of records, then one a second; what was held back is counted and
// told with the next record that goes out.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>

namespace svad::core {

class RateLimit {
public:
    using Clock = std::chrono::steady_clock;

    struct Verdict {
        bool log = false;        // write this record
        uint64_t suppressed = 0; // records of this key held back since the last one written
    };

    // `burst` records at once, then `perSecond`; at most `maxKeys` keys are
    // remembered (past that the oldest is forgotten, which can only let a
    // record through early, never hold one back longer).
    explicit RateLimit(double burst = 10, double perSecond = 1, size_t maxKeys = 1024)
        : burst_(burst), perSecond_(perSecond), maxKeys_(maxKeys) {}

    Verdict admit(uint64_t key, Clock::time_point now);

private:
    struct Bucket {
        double tokens = 0;
        Clock::time_point last;
        uint64_t suppressed = 0;
    };
    double burst_;
    double perSecond_;
    size_t maxKeys_;
    std::map<uint64_t, Bucket> buckets_;
};

} // namespace svad::core
