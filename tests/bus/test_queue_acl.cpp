// Work queues the way the kernel allows them: an idxd queue binds the address
// space of the process that opens it (drivers/dma/idxd/cdev.c), so svad opens
// no queue for anyone. A context gets the queue's node path (info's
// queue_nodes, no device_fds entry) and its owner's uid an ACL entry rw on
// the node, with a mask that lets it through; the entry goes when the last
// context of that uid on the queue ends (release, owner exit, or found dead
// at a restart), and comes back for a context svad takes back. The ACLs are
// read with libacl on the generated tree's node files.
#include "acl_entries.h"
#include "fixture.h"

#include <csignal>
#include <gtest/gtest.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr uid_t kOther = 4242; // an entry svad did not make: it must stay as it is

uint32_t contextCount(SvadFixture& f) {
    return f.property(kRoot, kManager, "ContextCount").get<uint32_t>();
}

void release(SvadFixture& f, const sdbus::ObjectPath& context) {
    f.proxy(kRoot)->callMethod("ReleaseContext").onInterface(kManager).withArguments(context);
}

std::string nodeOf(SvadFixture& f, const std::string& queue) {
    return f.devRoot() + "/dsa/" + queue;
}

// Whether the owner's (this test's) uid has an effective rw entry on the node.
::testing::AssertionResult granted(const std::string& node) {
    const AclEntries acl = aclOf(node);
    if (!acl.read) {
        return ::testing::AssertionFailure() << "cannot read the ACL of " << node;
    }
    auto it = acl.users.find(::getuid());
    if (it == acl.users.end() || it->second.substr(0, 2) != "rw") {
        return ::testing::AssertionFailure()
               << "no user:" << ::getuid() << ":rw entry: " << acl.text;
    }
    if (!acl.mask || acl.mask->substr(0, 2) != "rw") {
        return ::testing::AssertionFailure() << "the mask does not let rw through: " << acl.text;
    }
    return ::testing::AssertionSuccess() << acl.text;
}

::testing::AssertionResult notGranted(const std::string& node) {
    const AclEntries acl = aclOf(node);
    if (!acl.read) {
        return ::testing::AssertionFailure() << "cannot read the ACL of " << node;
    }
    if (acl.users.count(::getuid()) != 0) {
        return ::testing::AssertionFailure() << "the owner's entry is still there: " << acl.text;
    }
    return ::testing::AssertionSuccess() << acl.text;
}

// A child that waits to be killed: an owner_pid for a context (root only).
pid_t spawnOwner() {
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::pause();
        ::_exit(0);
    }
    return pid;
}

void reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    int status = 0;
    (void)::waitpid(pid, &status, 0);
}

TEST(QueueAcl, AllocationGrantsTheNodeAndReleaseTakesItBack) {
    SvadFixture f(testHost());
    const std::string node = nodeOf(f, "wq0.0");
    // Another entry, and the mask it had, stay as they are.
    ASSERT_TRUE(setAcl(node, "u::rw-,u:" + std::to_string(kOther) + ":r--,g::---,m::r--,o::---"))
        << node;

    Allocated a = allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.0", "vdpa0"});
    // No fd for the queue (one opened by svad would be bound to svad's mm): its node.
    EXPECT_EQ(a.fds.count("wq0.0"), 0U);
    EXPECT_EQ(a.fds.count("vdpa0"), 1U);
    ASSERT_EQ(a.info.count("queue_nodes"), 1U);
    const auto nodes = a.info.at("queue_nodes").get<std::map<std::string, std::string>>();
    EXPECT_EQ(nodes, (std::map<std::string, std::string>{{"wq0.0", node}}));
    EXPECT_TRUE(granted(node));
    AclEntries acl = aclOf(node);
    EXPECT_EQ(acl.users[::getuid()], "rw-") << acl.text;
    EXPECT_EQ(acl.users[kOther], "r--") << acl.text;

    release(f, a.path);
    EXPECT_TRUE(notGranted(node));
    acl = aclOf(node);
    EXPECT_EQ(acl.users[kOther], "r--") << acl.text;
    EXPECT_TRUE(acl.mask.has_value()) << acl.text; // still a named entry: the mask stays
    EXPECT_EQ(contextCount(f), 0U);
}

TEST(QueueAcl, ANodeWithoutAnAclGetsItsMaskAndLosesItWithTheEntry) {
    SvadFixture f(testHost());
    const std::string node = nodeOf(f, "wq0.0");
    ASSERT_FALSE(aclOf(node).mask.has_value()) << aclOf(node).text;
    Allocated a = allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.0"});
    EXPECT_TRUE(granted(node));
    release(f, a.path);
    EXPECT_TRUE(notGranted(node));
    EXPECT_FALSE(aclOf(node).mask.has_value()) << aclOf(node).text;
}

TEST(QueueAcl, OwnerExitTakesTheGrantBack) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "naming another owner_pid is for root";
    }
    SvadFixture f(testHost());
    const std::string node = nodeOf(f, "wq0.0");
    const pid_t owner = spawnOwner();
    ASSERT_GT(owner, 0);
    (void)allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.0"},
                          {{"owner_pid", sdbus::Variant(static_cast<uint32_t>(owner))}});
    EXPECT_TRUE(granted(node));
    reap(owner);
    ASSERT_TRUE(waitUntil([&f] { return contextCount(f) == 0; })) << f.svad().log();
    EXPECT_TRUE(notGranted(node));
}

TEST(QueueAcl, ASharedQueueKeepsTheEntryUntilTheUidsLastContextEnds) {
    SvadFixture f(testHost());
    const std::string node = nodeOf(f, "wq0.1"); // shared
    Allocated a = allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.1"});
    Allocated b = allocateContext(*f.proxy(kRoot), "vm-2", {"wq0.1"});
    EXPECT_TRUE(granted(node));
    release(f, a.path);
    EXPECT_TRUE(granted(node)); // the second context of this uid still holds it
    release(f, b.path);
    EXPECT_TRUE(notGranted(node));
}

TEST(QueueAcl, ARestartGrantsAKeptContextAgainAndRevokesForADeadOwner) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "naming another owner_pid is for root";
    }
    TempDir state;
    SvadFixture f(testHost(), {"--state-dir", state.path() + "/state"});
    const std::string kept = nodeOf(f, "wq0.0");
    const std::string dead = nodeOf(f, "wq0.1");
    Allocated a = allocateContext(*f.proxy(kRoot), "vm-1", {"wq0.0"});
    const pid_t owner = spawnOwner();
    ASSERT_GT(owner, 0);
    (void)allocateContext(*f.proxy(kRoot), "vm-2", {"wq0.1"},
                          {{"owner_pid", sdbus::Variant(static_cast<uint32_t>(owner))}});
    ASSERT_TRUE(granted(kept));
    ASSERT_TRUE(granted(dead));

    // svad goes down; the second owner exits meanwhile, and the first one's
    // entry is lost (a node made again): the restart puts it back.
    f.svad().signal(SIGSTOP);
    reap(owner);
    ASSERT_TRUE(setAcl(kept, "u::---,g::---,o::---"));
    ASSERT_TRUE(notGranted(kept));
    f.restart(SIGKILL);

    ASSERT_TRUE(waitUntil([&f] { return contextCount(f) == 1; })) << f.svad().log();
    EXPECT_TRUE(granted(kept)) << f.svad().log();
    EXPECT_TRUE(notGranted(dead)) << f.svad().log();

    release(f, a.path);
    EXPECT_TRUE(notGranted(kept));
}

} // namespace
} // namespace svad::test
