// What /proc says of a process: its start time, which tells the process
// apart from a later one that got the same pid.
#pragma once

#include <cstdint>
#include <optional>
#include <sys/types.h>

namespace svad::linux_impl {

// Field 22 of /proc/PID/stat (clock ticks after boot); 0 when there is no
// such process or the file cannot be read.
uint64_t processStartTime(pid_t pid, const char* procRoot = "/proc");

// The effective uid of a process (the Uid line of /proc/PID/status); nullopt
// when there is no such process or the file cannot be read.
std::optional<uid_t> processUid(pid_t pid, const char* procRoot = "/proc");

} // namespace svad::linux_impl
