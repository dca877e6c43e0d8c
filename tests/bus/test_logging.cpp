// svad's log targets: readable lines on stderr, a named error for a bad one.
#include "fixture.h"

#include <chrono>
#include <gtest/gtest.h>
#include <thread>

namespace svad::test {
namespace {

TEST(Logging, StderrTargetWritesReadableLinesWithFields) {
    SvadFixture f(testHost(), {"--log-target", "stderr"});
    std::string log;
    for (int i = 0; i < 250 && log.find(" ready [") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        log = f.svad().log();
    }
    EXPECT_NE(log.find("svad: notice: svad "), std::string::npos) << log;
    EXPECT_NE(log.find(" ready [BUS=" + f.bus() + " BACKEND=sim"), std::string::npos) << log;
    EXPECT_NE(log.find("svad: info: host scanned [DEVICES=7 "), std::string::npos) << log;
}

TEST(Logging, UnknownTargetIsAUsageError) {
    auto r = runCommand({SVAD_BINARY, "--log-target", "syslog"});
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_EQ(
        r.errors,
        "svad: --log-target must be 'auto', 'journal' or 'stderr', not 'syslog' (try --help)\n");
}

} // namespace
} // namespace svad::test
