// Collects svad's log records for the length of a test (one at a time: the
// sink is process-wide).
#pragma once

#include "svad/core/log.h"

#include <string>
#include <vector>

namespace svad::test {

class LogCapture {
public:
    LogCapture() {
        svad::log::setSink(
            [this](svad::log::Priority p, const std::string& m, const svad::log::Fields& f) {
                lines.push_back(svad::log::formatLine(p, m, f));
            });
    }
    ~LogCapture() { svad::log::setSink(nullptr); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;
    std::string all() const {
        std::string out;
        for (const auto& l : lines) {
            out += l + "\n";
        }
        return out;
    }
    std::vector<std::string> lines;
};

} // namespace svad::test
