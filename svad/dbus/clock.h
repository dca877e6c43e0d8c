// Wall-clock time as the bus API gives it (CreatedTime, LastScanTime).
#pragma once

#include <cstdint>
#include <time.h>

namespace svad::dbus {

inline uint64_t realtimeUsec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

} // namespace svad::dbus
