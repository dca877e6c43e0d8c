// processStartTime reads field 22 of a stat file, behind a command name that
// may hold spaces and parentheses; a missing or odd file is 0. processUid reads
// the effective uid of the status file's Uid line.
#include "scratch_dir.h"
#include "svad/linux/proc.h"

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <unistd.h>

namespace svad {
namespace {

class ProcDir : public test::ScratchDir {
public:
    ProcDir() : ScratchDir("svad-proc-test") {}
    void stat(int pid, const std::string& text) const {
        std::filesystem::create_directories(path() + "/" + std::to_string(pid));
        std::ofstream(path() + "/" + std::to_string(pid) + "/stat") << text;
    }
    void status(int pid, const std::string& text) const {
        std::filesystem::create_directories(path() + "/" + std::to_string(pid));
        std::ofstream(path() + "/" + std::to_string(pid) + "/status") << text;
    }
};

TEST(Proc, StartTimeIsField22AfterTheCommand) {
    ProcDir proc;
    // Fields 3..21 are 1..19 here; field 22 is 987654.
    std::string rest;
    for (int i = 1; i <= 19; ++i) {
        rest += " " + std::to_string(i);
    }
    proc.stat(42, "42 (qemu (x) y)" + rest + " 987654 25 26\n");
    EXPECT_EQ(linux_impl::processStartTime(42, proc.path().c_str()), 987654U);
    proc.stat(43, "43 (short)" + rest + "\n"); // cut before field 22
    EXPECT_EQ(linux_impl::processStartTime(43, proc.path().c_str()), 0U);
    proc.stat(44, "garbage without a parenthesis");
    EXPECT_EQ(linux_impl::processStartTime(44, proc.path().c_str()), 0U);
    EXPECT_EQ(linux_impl::processStartTime(45, proc.path().c_str()), 0U); // no such process
    EXPECT_EQ(linux_impl::processStartTime(0, proc.path().c_str()), 0U);
}

// processUid is the effective uid: the second number of the Uid line.
TEST(Proc, UidIsTheEffectiveOneOfTheUidLine) {
    ProcDir proc;
    proc.status(42, "Name:\tqemu\nUmask:\t0022\nUid:\t1000\t64055\t64055\t64055\nGid:\t0\n");
    EXPECT_EQ(linux_impl::processUid(42, proc.path().c_str()), 64055U);
    proc.status(43, "Name:\tx\nUid:\t1000\n"); // no effective uid
    EXPECT_EQ(linux_impl::processUid(43, proc.path().c_str()), std::nullopt);
    proc.status(44, "Name:\tx\nUid:\t1\t99999999999\t0\t0\n"); // out of range
    EXPECT_EQ(linux_impl::processUid(44, proc.path().c_str()), std::nullopt);
    proc.status(45, "Name:\tUid:\t5\t5\n"); // not at the start of a line
    EXPECT_EQ(linux_impl::processUid(45, proc.path().c_str()), std::nullopt);
    EXPECT_EQ(linux_impl::processUid(46, proc.path().c_str()), std::nullopt); // no such process
    EXPECT_EQ(linux_impl::processUid(0, proc.path().c_str()), std::nullopt);
    EXPECT_EQ(linux_impl::processUid(::getpid()), ::geteuid());
}

} // namespace
} // namespace svad
