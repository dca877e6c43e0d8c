// Names the calling thread, as `ps -L`, `top -H`, gdb and
// /proc/<pid>/task/<tid>/comm show it. The kernel keeps 15 bytes; a longer
// name is cut there. svad's own threads are named "svad-<what>" (the main
// thread keeps the program's name), so that an administrator sees which of
// them is busy, and the workers that make svad's kernel calls ("svad-work")
// can be told from the rest.
#pragma once

#include <pthread.h>
#include <string>
#include <string_view>

namespace svad::core {

// Names `thread`; its creator calls it, so that the name is there before anyone
// can look.
inline void nameThread(pthread_t thread, std::string_view name) {
    constexpr size_t kMax = 15; // TASK_COMM_LEN less its NUL
    const std::string cut(name.substr(0, kMax));
    (void)pthread_setname_np(thread, cut.c_str());
}

inline void nameThisThread(std::string_view name) {
    nameThread(pthread_self(), name);
}

} // namespace svad::core
