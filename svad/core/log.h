// Structured logging. Each record has a priority, a message and fields
// (DEVICE=, GROUP=, VM=, PASID=, ...). The sink writes readable lines to
// stderr; the daemon may install another one (the journal).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace svad::log {

enum class Priority { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };

using Fields = std::vector<std::pair<std::string, std::string>>;
using Sink = std::function<void(Priority, const std::string&, const Fields&)>;

void setSink(Sink sink);
void setMaxPriority(Priority p);
void write(Priority p, const std::string& message, const Fields& fields = {});

inline void error(const std::string& m, const Fields& f = {}) {
    write(Priority::Error, m, f);
}
inline void warning(const std::string& m, const Fields& f = {}) {
    write(Priority::Warning, m, f);
}
inline void notice(const std::string& m, const Fields& f = {}) {
    write(Priority::Notice, m, f);
}
inline void info(const std::string& m, const Fields& f = {}) {
    write(Priority::Info, m, f);
}
inline void debug(const std::string& m, const Fields& f = {}) {
    write(Priority::Debug, m, f);
}

// "svad: warning: config: loop at 0x100 [DEVICE=0000:00:01.0]"
std::string formatLine(Priority p, const std::string& message, const Fields& fields);

} // namespace svad::log
