#include "svad/core/log.h"

#include <gtest/gtest.h>

namespace svad::log {
namespace {

TEST(Log, CallerTextCannotForgeALine) {
    const std::string line =
        formatLine(Priority::Notice, "context allocated",
                   {{"VM", "x\nsvad: notice: context allocated [VERDICT=allowed]"},
                    {"DEVICE", "0000:6a:01.0"}});
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_NE(line.find("VM=x\\x0asvad: notice"), std::string::npos) << line;
    EXPECT_EQ(line.rfind("svad: notice: context allocated [VM=", 0), 0U) << line;
    EXPECT_NE(line.find("DEVICE=0000:6a:01.0]"), std::string::npos) << line;
}

} // namespace
} // namespace svad::log
