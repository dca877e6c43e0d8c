// Progress of a long-running command, for a person at a terminal: after a short
// quiet spell, "WHAT… 2.4 s" is redrawn on stderr until the command is done,
// then the line is cleared. Off when stderr is not a terminal (scripts, --json
// consumers and tests see no progress lines).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace svad::cli {

class Progress {
public:
    // `enabled`: draw at all (normally isatty(STDERR_FILENO) and not --json).
    Progress(std::string what, bool enabled);
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // What is being waited for now ("waiting for wq0.0 (held by context 3)").
    void set(std::string what);

    // Whether stderr is a terminal.
    static bool terminal();

private:
    void run();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::string what_;
    bool done_ = false;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point start_;
    std::thread thread_;
};

// The progress line: "WHAT… 2.4 s".
std::string progressLine(const std::string& what, std::chrono::milliseconds elapsed);

} // namespace svad::cli
