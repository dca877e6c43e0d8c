#include "svad/cli/progress.h"

#include <cstdio>
#include <unistd.h>
#include <utility>

namespace svad::cli {

namespace {
// Nothing is drawn for calls that end within this time.
constexpr std::chrono::milliseconds kQuiet(300);
constexpr std::chrono::milliseconds kTick(100);
} // namespace

std::string progressLine(const std::string& what, std::chrono::milliseconds elapsed) {
    char buf[32];
    (void)std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(elapsed.count()) / 1000.0);
    return what + "\u2026 " + buf;
}

bool Progress::terminal() {
    return ::isatty(STDERR_FILENO) == 1;
}

Progress::Progress(std::string what, bool enabled)
    : what_(std::move(what)), start_(std::chrono::steady_clock::now()) {
    if (enabled) {
        thread_ = std::thread([this] { run(); });
    }
}

Progress::~Progress() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        done_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Progress::set(std::string what) {
    std::lock_guard<std::mutex> lock(mutex_);
    what_ = std::move(what);
}

void Progress::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (wake_.wait_for(lock, kQuiet, [this] { return done_; })) {
        return;
    }
    while (!done_) {
        const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - start_);
        // \r, the line, then clear to the end of the line (the previous one may
        // have been longer).
        (void)std::fprintf(stderr, "\r%s\033[K", progressLine(what_, elapsed).c_str());
        (void)std::fflush(stderr);
        drawn_ = true;
        wake_.wait_for(lock, kTick, [this] { return done_; });
    }
    if (drawn_) {
        (void)std::fputs("\r\033[K", stderr);
        (void)std::fflush(stderr);
    }
}

} // namespace svad::cli
