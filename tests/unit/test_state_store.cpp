// The state store: the port's contract, on the SQLite store and on the memory
// store alike (typed tests), and what only the SQLite store does: durability
// across a reopen and a crash, migrations, and a damaged or newer database
// moved aside.
#include "log_capture.h"
#include "scratch_dir.h"
#include "svad/core/log.h"
#include "svad/linux/state_sqlite.h"
#include "svad/ports/state_store.h"
#include "svad/ports/state_store_memory.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sqlite3.h>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using svad::linux_impl::SqliteStateStore;
using svad::linux_impl::StateMigration;
using svad::linux_impl::StateOpenReport;
using svad::ports::AutoBindRecord;
using svad::ports::MemoryStateStore;
using svad::ports::StateError;
using svad::ports::StateStore;
using svad::ports::StoredContext;
using ::testing::HasSubstr;

// A context with every field set, text that needs care (UTF-8, quotes, SQL),
// and integers at the ends of their types.
StoredContext fullContext(uint64_t id) {
    StoredContext c;
    c.id = id;
    c.vm = "vm-ünïcødé-😀 'quoted'; DROP TABLE contexts; --";
    c.ownerUid = std::numeric_limits<uint32_t>::max();
    c.ownerPid = -1;
    c.ownerStartTime = std::numeric_limits<uint64_t>::max();
    c.ownerBusName = ":1.42";
    c.mode = 2;
    c.ioasId = 7;
    c.faultQueueId = 9;
    c.createdUsec = 1'700'000'000'123'456ULL;
    c.devices = {{"0000:65:00.1", 1, 3, "vfio", "allow-nic"},
                 {"vdpa0", 2, 4, "vdpa", "régle ✓"},
                 {"wq0.1", 3, 5, "idxd", ""}};
    c.pasids = {{1, "0000:65:00.1"}, {0xfffff, "vdpa0"}};
    c.virtualIds = {{"0000:65:00.1", 0x100}, {"vdpa0", std::numeric_limits<uint64_t>::max()}};
    c.fds = {
        {"ctx" + std::to_string(id) + "-iommufd", {0020000, 0x0a7b}},
        {"ctx" + std::to_string(id) + "-dev0", {0020000, std::numeric_limits<uint64_t>::max()}},
        {"ctx" + std::to_string(id) + "-fault", {0, 0}}};
    return c;
}

StoredContext smallContext(uint64_t id, const std::string& vm) {
    StoredContext c;
    c.id = id;
    c.vm = vm;
    c.ownerUid = 1000;
    c.ownerPid = 4242;
    c.ownerStartTime = 123456;
    c.ownerBusName = ":1.7";
    c.devices = {{"0000:00:02.0", 1, 1, "vfio", "r"}};
    return c;
}

// ---- the same suite on both stores ----------------------------------------------------

struct MemoryBackend {
    MemoryStateStore store;
    StateStore& get() { return store; }
    void reopen() {} // nothing to reopen: the same store keeps its state
};

struct SqliteBackend {
    svad::test::ScratchDir dir{"svad-state"};
    std::unique_ptr<SqliteStateStore> store = SqliteStateStore::open(dir.path());
    StateStore& get() { return *store; }
    void reopen() {
        store.reset();
        store = SqliteStateStore::open(dir.path());
        EXPECT_EQ(store->openReport().outcome, StateOpenReport::Outcome::Opened);
    }
};

template <typename B> class StateStoreContract : public ::testing::Test {
protected:
    B backend;
    StateStore& store() { return backend.get(); }
    void reopen() { backend.reopen(); }
};

using Backends = ::testing::Types<MemoryBackend, SqliteBackend>;
class BackendNames {
public:
    // The name googletest asks for.
    template <typename T> static std::string GetName(int) { // NOLINT(readability-identifier-naming)
        return std::is_same_v<T, MemoryBackend> ? "Memory" : "Sqlite";
    }
};
TYPED_TEST_SUITE(StateStoreContract, Backends, BackendNames);

TYPED_TEST(StateStoreContract, StartsEmptyWithContextIdOne) {
    EXPECT_TRUE(this->store().contexts().empty());
    EXPECT_TRUE(this->store().autoBinds().empty());
    EXPECT_EQ(this->store().peekNextContextId(), 1U);
}

TYPED_TEST(StateStoreContract, EveryRecordTypeRoundTripsThroughReopen) {
    StoredContext a = fullContext(1);
    StoredContext b = smallContext(2, "second");
    this->store().putContext(a);
    this->store().putContext(b);
    this->store().putPasid(2, 5, "0000:00:02.0");
    this->store().putVirtualId(2, "0000:00:02.0", 0x42);
    AutoBindRecord r1{"0000:65:00.1", "ixgbevf", "", 1};
    AutoBindRecord r2{"0000:00:02.0", "", "vfio-pci", 2};
    this->store().putAutoBind(r1);
    this->store().putAutoBind(r2);
    this->reopen();

    b.pasids[5] = "0000:00:02.0";
    b.virtualIds["0000:00:02.0"] = 0x42;
    EXPECT_EQ(this->store().contexts(), (std::vector<StoredContext>{a, b}));
    EXPECT_EQ(this->store().autoBinds(), (std::vector<AutoBindRecord>{r2, r1})); // by address
}

TYPED_TEST(StateStoreContract, TakeContextIdNeverRepeatsAcrossReopen) {
    EXPECT_EQ(this->store().takeContextId(), 1U);
    EXPECT_EQ(this->store().takeContextId(), 2U);
    EXPECT_EQ(this->store().takeContextId(), 3U);
    this->reopen();
    EXPECT_EQ(this->store().peekNextContextId(), 4U);
    EXPECT_EQ(this->store().takeContextId(), 4U);
    EXPECT_EQ(this->store().peekNextContextId(), 5U);
}

TYPED_TEST(StateStoreContract, RaiseNextContextIdOnlyRaises) {
    this->store().raiseNextContextId(40);
    EXPECT_EQ(this->store().peekNextContextId(), 40U);
    this->store().raiseNextContextId(12); // below: nothing changes
    this->reopen();
    EXPECT_EQ(this->store().takeContextId(), 40U);
    EXPECT_EQ(this->store().peekNextContextId(), 41U);
}

TYPED_TEST(StateStoreContract, PuttingAContextRaisesTheNextIdPastIt) {
    this->store().putContext(smallContext(10, "ten"));
    EXPECT_EQ(this->store().peekNextContextId(), 11U);
    this->store().putContext(smallContext(3, "three")); // below: the next id stays
    this->reopen();
    EXPECT_EQ(this->store().takeContextId(), 11U);
}

TYPED_TEST(StateStoreContract, PutContextReplacesAllOfIt) {
    this->store().putContext(fullContext(1));
    this->store().putPasid(1, 77, "vdpa0");
    StoredContext smaller = smallContext(1, "replaced");
    this->store().putContext(smaller);
    this->reopen();
    EXPECT_EQ(this->store().contexts(), std::vector<StoredContext>{smaller});
}

TYPED_TEST(StateStoreContract, RemoveContextDropsItsPasidsAndVirtualIdsNotItsAutoBinds) {
    this->store().putContext(fullContext(1));
    this->store().putContext(fullContext(2));
    AutoBindRecord bind{"0000:65:00.1", "ixgbevf", "", 1};
    this->store().putAutoBind(bind);
    this->store().removeContext(1);
    this->reopen();
    EXPECT_EQ(this->store().contexts(), std::vector<StoredContext>{fullContext(2)});
    EXPECT_EQ(this->store().autoBinds(), std::vector<AutoBindRecord>{bind});

    // A context stored again under the same id finds nothing of the old one.
    StoredContext bare = smallContext(1, "again");
    bare.devices.clear();
    this->store().putContext(bare);
    EXPECT_EQ(this->store().contexts(), (std::vector<StoredContext>{bare, fullContext(2)}));
}

TYPED_TEST(StateStoreContract, PasidsAndVirtualIdsAreAddedReplacedAndRemoved) {
    this->store().putContext(smallContext(1, "vm"));
    this->store().putPasid(1, 10, "a");
    this->store().putPasid(1, 11, "b");
    this->store().putPasid(1, 10, "c"); // replaces
    this->store().removePasid(1, 11);
    this->store().removePasid(1, 99); // none: nothing happens
    this->store().putVirtualId(1, "a", 1);
    this->store().putVirtualId(1, "a", 2); // replaces
    this->store().putVirtualId(1, "b", 3);
    this->reopen();
    auto all = this->store().contexts();
    ASSERT_EQ(all.size(), 1U);
    EXPECT_EQ(all[0].pasids, (std::map<uint32_t, std::string>{{10, "c"}}));
    EXPECT_EQ(all[0].virtualIds, (std::map<std::string, uint64_t>{{"a", 2}, {"b", 3}}));
}

TYPED_TEST(StateStoreContract, AutoBindIsReplacedAndRemoved) {
    this->store().putAutoBind({"0000:01:00.0", "e1000e", "", 1});
    this->store().putAutoBind({"0000:01:00.0", "igb", "igb", 2});
    this->store().putAutoBind({"0000:02:00.0", "", "", 3});
    this->store().removeAutoBind("0000:02:00.0");
    this->store().removeAutoBind("0000:09:00.0"); // none: nothing happens
    this->reopen();
    EXPECT_EQ(this->store().autoBinds(),
              (std::vector<AutoBindRecord>{{"0000:01:00.0", "igb", "igb", 2}}));
}

TYPED_TEST(StateStoreContract, APasidOrVirtualIdOfNoContextIsAConstraintError) {
    this->store().putContext(smallContext(1, "vm"));
    try {
        this->store().putPasid(2, 5, "dev");
        ADD_FAILURE() << "putPasid of no context succeeded";
    } catch (const StateError& e) {
        EXPECT_EQ(e.code(), StateError::Code::Constraint) << e.what();
        EXPECT_THAT(e.what(), HasSubstr("putPasid(2)"));
    }
    EXPECT_THROW(this->store().putVirtualId(2, "dev", 1), StateError);
    this->store().removeContext(7); // none: nothing happens
    EXPECT_EQ(this->store().contexts().size(), 1U);
    EXPECT_TRUE(this->store().contexts()[0].pasids.empty());
}

// ---- the SQLite store -----------------------------------------------------------------

// A raw connection to a database file, for writing one by hand and for looking
// inside one.
class RawDb {
public:
    explicit RawDb(const std::string& path) {
        if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
            throw std::runtime_error("sqlite3_open " + path);
        }
    }
    ~RawDb() { sqlite3_close(db_); }
    RawDb(const RawDb&) = delete;
    RawDb& operator=(const RawDb&) = delete;
    void exec(const std::string& sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            std::string msg = err != nullptr ? err : "?";
            sqlite3_free(err);
            throw std::runtime_error(msg + " in: " + sql);
        }
    }
    int64_t integer(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
            throw std::runtime_error(std::string(sqlite3_errmsg(db_)) + " in: " + sql);
        }
        int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
        sqlite3_finalize(s);
        return v;
    }

private:
    sqlite3* db_ = nullptr;
};

using svad::test::LogCapture;

// The schema version this svad writes.
int current() {
    return SqliteStateStore::migrations().back().version;
}

// SQLite's default page size.
constexpr uintmax_t kPage = 4096;

std::string dbPath(const svad::test::ScratchDir& dir) {
    return dir.path() + "/state.db";
}

std::string readFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(SqliteStateStore, CreatesAPrivateDurableDatabase) {
    svad::test::ScratchDir dir("svad-state");
    std::string sub = dir.path() + "/var/lib/svad";
    auto store = SqliteStateStore::open(sub);
    EXPECT_EQ(store->openReport().outcome, StateOpenReport::Outcome::Created);
    EXPECT_EQ(store->openReport().version, current());
    EXPECT_EQ(store->openReport().path, sub + "/state.db");
    store->takeContextId();

    struct stat st {};
    ASSERT_EQ(::stat((sub + "/state.db").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600U);
    ASSERT_EQ(::stat(sub.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700U);
    auto s = store->settings();
    EXPECT_EQ(s.journalMode, "wal");
    EXPECT_EQ(s.synchronous, 1); // NORMAL: no fsync per call; the context ids are kept apart
    EXPECT_TRUE(s.foreignKeys);
    EXPECT_GT(s.busyTimeoutMs, 0);
    store.reset();
    EXPECT_EQ(RawDb(sub + "/state.db").integer("PRAGMA user_version"), current());
}

TEST(SqliteStateStore, AnExistingFileIsMadePrivate) {
    svad::test::ScratchDir dir("svad-state");
    SqliteStateStore::open(dir.path()).reset();
    ASSERT_EQ(::chmod(dbPath(dir).c_str(), 0644), 0);
    auto store = SqliteStateStore::open(dir.path());
    struct stat st {};
    ASSERT_EQ(::stat(dbPath(dir).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600U);
}

// svad dies right after takeContextId returned (no destructor, no checkpoint):
// the next svad does not hand that id out again.
TEST(SqliteStateStore, AnIdTakenJustBeforeACrashIsNotReused) {
    svad::test::ScratchDir dir("svad-state");
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto store = SqliteStateStore::open(dir.path());
        store->putContext(smallContext(store->takeContextId(), "crashed"));
        store->takeContextId();
        store->takeContextId();
        ::_exit(store->peekNextContextId() == 4 ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);

    auto store = SqliteStateStore::open(dir.path());
    EXPECT_EQ(store->takeContextId(), 4U);
    ASSERT_EQ(store->contexts().size(), 1U);
    EXPECT_EQ(store->contexts()[0].vm, "crashed");
}

// A crash of the host may take the last commits (synchronous=NORMAL) with it:
// here the next id is set back by hand, as if they were lost. Opened in the
// next boot, the store goes on past every id it may have handed out; in the
// same boot, from the last one.
TEST(SqliteStateStore, AfterAHostCrashNoIdIsHandedOutTwice) {
    svad::test::ScratchDir dir("svad-state");
    const auto steps = SqliteStateStore::migrations();
    std::vector<uint64_t> taken;
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "boot-a");
        for (int i = 0; i < 3; ++i) {
            taken.push_back(store->takeContextId());
        }
    }
    EXPECT_EQ(taken, (std::vector<uint64_t>{1, 2, 3}));
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "boot-a");
        EXPECT_EQ(store->takeContextId(), 4U) << "the same boot goes on from the last id";
    }
    RawDb(dbPath(dir)).exec("UPDATE meta SET value = 1 WHERE key = 'next_context_id'");
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "boot-b");
        const uint64_t id = store->takeContextId();
        EXPECT_GT(id, 4U) << "an id the last boot may have handed out";
        EXPECT_LE(id, 4U + 1024U + 1U) << "the jump is at most one block";
        taken.push_back(id);
    }
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "boot-b");
        EXPECT_EQ(store->takeContextId(), taken.back() + 1);
    }
    // A boot it cannot tell is taken as a new one each time.
    uint64_t unknown = 0;
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "");
        unknown = store->takeContextId();
        EXPECT_GT(unknown, taken.back() + 1);
    }
    RawDb(dbPath(dir)).exec("UPDATE meta SET value = 1 WHERE key = 'next_context_id'");
    auto store = SqliteStateStore::open(dir.path(), steps, "");
    EXPECT_GT(store->takeContextId(), unknown);
}

// The reservation moves on before an id passes it, however many are taken.
TEST(SqliteStateStore, TheIdReservationStaysAheadOfEveryIdTaken) {
    svad::test::ScratchDir dir("svad-state");
    const auto steps = SqliteStateStore::migrations();
    uint64_t last = 0;
    {
        auto store = SqliteStateStore::open(dir.path(), steps, "boot-a");
        for (uint64_t i = 1; i <= 2500; ++i) {
            EXPECT_EQ(store->takeContextId(), i);
        }
        store->raiseNextContextId(4000);
        last = store->takeContextId();
        EXPECT_EQ(last, 4000U);
    }
    RawDb raw(dbPath(dir));
    EXPECT_GT(raw.integer("SELECT value FROM meta WHERE key = 'context_ids_reserved'"),
              static_cast<int64_t>(last));
    raw.exec("UPDATE meta SET value = 1 WHERE key = 'next_context_id'");
    auto store = SqliteStateStore::open(dir.path(), steps, "boot-b");
    EXPECT_GT(store->takeContextId(), last);
}

// The WAL is copied back into the database by the store's own checkpoint
// thread, not by the calls (svad makes them on its bus loop): the database
// file grows while the writer goes on.
TEST(SqliteStateStore, ACheckpointThreadCopiesTheWalBack) {
    svad::test::ScratchDir dir("svad-state");
    auto store = SqliteStateStore::open(dir.path(), SqliteStateStore::migrations(), "boot-a");
    const auto before = fs::file_size(dbPath(dir));
    EXPECT_EQ(store->checkpoints(), 0U);
    for (uint64_t id = 1; id <= 600; ++id) {
        StoredContext c = smallContext(id, std::string(3000, 'v'));
        store->putContext(c);
    }
    for (int i = 0; i < 500 && store->checkpoints() == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GE(store->checkpoints(), 1U);
    // The first checkpoint copies what was committed when it ran: at least the
    // 1,000 WAL frames that woke it, some 230 distinct pages (946 KiB were seen
    // on a loaded machine, where the thread ran at once); later commits may
    // still be in the WAL.
    EXPECT_GT(fs::file_size(dbPath(dir)), before + uintmax_t{512} * 1024)
        << "the pages of the WAL are in the database file";
    EXPECT_EQ(store->contexts().size(), 600U);
}

// Two stores on one directory would hand out the same ids and overwrite each
// other's records: the second is refused by name while the first is open.
TEST(SqliteStateStore, ASecondStoreOnTheSameDirectoryIsRefused) {
    svad::test::ScratchDir dir("svad-state");
    auto first = SqliteStateStore::open(dir.path(), SqliteStateStore::migrations(), "boot-a");
    try {
        (void)SqliteStateStore::open(dir.path(), SqliteStateStore::migrations(), "boot-a");
        ADD_FAILURE() << "a second store opened";
    } catch (const StateError& e) {
        EXPECT_EQ(e.code(), StateError::Code::Busy);
        EXPECT_THAT(e.what(), HasSubstr("in use by another svad"));
    }
    EXPECT_EQ(first->takeContextId(), 1U) << "the first store goes on";
    first.reset();
    auto second = SqliteStateStore::open(dir.path(), SqliteStateStore::migrations(), "boot-a");
    EXPECT_EQ(second->takeContextId(), 2U);
}

// The first schema, written here by hand: a released schema never changes,
// and a database written by the first svad with a store must stay readable.
void writeV1ByHand(const std::string& path) {
    RawDb db(path);
    db.exec(R"sql(
PRAGMA journal_mode = WAL;
BEGIN;
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;
CREATE TABLE contexts (
    id INTEGER PRIMARY KEY NOT NULL, vm TEXT NOT NULL, owner_uid INTEGER NOT NULL,
    owner_pid INTEGER NOT NULL, owner_start_time INTEGER NOT NULL,
    owner_bus_name TEXT NOT NULL, mode INTEGER NOT NULL, ioas_id INTEGER NOT NULL,
    fault_queue_id INTEGER NOT NULL, created_usec INTEGER NOT NULL) STRICT;
CREATE TABLE context_devices (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL, device TEXT NOT NULL, kind INTEGER NOT NULL,
    dev_id INTEGER NOT NULL, plugin TEXT NOT NULL, rule TEXT NOT NULL,
    PRIMARY KEY (context, position)) STRICT;
CREATE TABLE context_pasids (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    pasid INTEGER NOT NULL, device TEXT NOT NULL, PRIMARY KEY (context, pasid)) STRICT;
CREATE TABLE context_virtual_ids (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    device TEXT NOT NULL, virtual_id INTEGER NOT NULL, PRIMARY KEY (context, device)) STRICT;
CREATE TABLE auto_binds (
    address TEXT PRIMARY KEY NOT NULL, previous_driver TEXT NOT NULL,
    previous_override TEXT NOT NULL, context INTEGER NOT NULL) STRICT;
INSERT INTO meta VALUES ('next_context_id', 8);
INSERT INTO contexts VALUES (7, 'vm-α', 1000, 4242, 99, ':1.5', 1, 2, 3, 1700000000000000);
INSERT INTO context_devices VALUES (7, 0, '0000:65:00.1', 1, 3, 'vfio', 'nic');
INSERT INTO context_devices VALUES (7, 1, 'vdpa0', 2, 4, 'vdpa', 'net');
INSERT INTO context_pasids VALUES (7, 12, 'vdpa0');
INSERT INTO context_virtual_ids VALUES (7, '0000:65:00.1', 256);
INSERT INTO auto_binds VALUES ('0000:65:00.1', 'ixgbevf', '', 7);
PRAGMA user_version = 1;
COMMIT;
)sql");
}

StoredContext handWrittenContext() {
    StoredContext c;
    c.id = 7;
    c.vm = "vm-α";
    c.ownerUid = 1000;
    c.ownerPid = 4242;
    c.ownerStartTime = 99;
    c.ownerBusName = ":1.5";
    c.mode = 1;
    c.ioasId = 2;
    c.faultQueueId = 3;
    c.createdUsec = 1700000000000000ULL;
    c.devices = {{"0000:65:00.1", 1, 3, "vfio", "nic"}, {"vdpa0", 2, 4, "vdpa", "net"}};
    c.pasids = {{12, "vdpa0"}};
    c.virtualIds = {{"0000:65:00.1", 256}};
    return c;
}

TEST(SqliteStateStore, ReadsAVersion1DatabaseWrittenByHand) {
    svad::test::ScratchDir dir("svad-state");
    writeV1ByHand(dbPath(dir));
    auto store = SqliteStateStore::open(dir.path());
    EXPECT_EQ(store->openReport().outcome, StateOpenReport::Outcome::Migrated);
    EXPECT_EQ(store->contexts(), std::vector<StoredContext>{handWrittenContext()});
    EXPECT_EQ(store->autoBinds(),
              (std::vector<AutoBindRecord>{{"0000:65:00.1", "ixgbevf", "", 7}}));
    EXPECT_EQ(store->takeContextId(), 8U);
}

TEST(SqliteStateStore, MigratesVersion1ToTheCurrentVersion) {
    svad::test::ScratchDir dir("svad-state");
    writeV1ByHand(dbPath(dir));
    LogCapture log;
    {
        auto store = SqliteStateStore::open(dir.path());
        const auto& r = store->openReport();
        EXPECT_EQ(r.outcome, StateOpenReport::Outcome::Migrated);
        EXPECT_EQ(r.foundVersion, 1);
        EXPECT_EQ(r.version, 2);
        EXPECT_EQ(store->contexts(), std::vector<StoredContext>{handWrittenContext()});
        // Version 2 keeps what fstat said of the context's fds.
        StoredContext c = handWrittenContext();
        c.fds = {{"ctx7-iommufd", {0020000, 0x0a7b}}, {"ctx7-dev0", {0020000, 0xef00001}}};
        store->putContext(c);
        EXPECT_EQ(store->contexts(), std::vector<StoredContext>{c});
    }
    EXPECT_THAT(log.all(), HasSubstr("migrated"));
    EXPECT_EQ(RawDb(dbPath(dir)).integer("PRAGMA user_version"), 2);
}

TEST(SqliteStateStore, MigratesVersion1ToATestVersion3) {
    svad::test::ScratchDir dir("svad-state");
    writeV1ByHand(dbPath(dir));
    std::vector<StateMigration> steps = SqliteStateStore::migrations();
    ASSERT_EQ(steps.size(), 2U);
    steps.push_back({3, "ALTER TABLE contexts ADD COLUMN label TEXT NOT NULL DEFAULT '';"
                        "UPDATE contexts SET label = 'from-v1';"
                        "CREATE TABLE v3_only (x INTEGER) STRICT;"});
    LogCapture log;
    {
        auto store = SqliteStateStore::open(dir.path(), steps);
        const auto& r = store->openReport();
        EXPECT_EQ(r.outcome, StateOpenReport::Outcome::Migrated);
        EXPECT_EQ(r.foundVersion, 1);
        EXPECT_EQ(r.version, 3);
        EXPECT_EQ(store->contexts(), std::vector<StoredContext>{handWrittenContext()});
        EXPECT_EQ(store->autoBinds().size(), 1U);
        EXPECT_EQ(store->takeContextId(), 8U);
    }
    EXPECT_THAT(log.all(), HasSubstr("migrated"));
    {
        RawDb raw(dbPath(dir));
        EXPECT_EQ(raw.integer("PRAGMA user_version"), 3);
        EXPECT_EQ(raw.integer("SELECT count(*) FROM contexts WHERE label = 'from-v1'"), 1);
        EXPECT_EQ(raw.integer("SELECT count(*) FROM v3_only"), 0);
    }
    // Opened again with the same steps: nothing to run.
    auto again = SqliteStateStore::open(dir.path(), steps);
    EXPECT_EQ(again->openReport().outcome, StateOpenReport::Outcome::Opened);
    EXPECT_EQ(again->takeContextId(), 9U);
}

TEST(SqliteStateStore, AFailingMigrationChangesNothing) {
    svad::test::ScratchDir dir("svad-state");
    {
        auto store = SqliteStateStore::open(dir.path());
        store->putContext(smallContext(1, "kept"));
    }
    std::vector<StateMigration> steps = SqliteStateStore::migrations();
    steps.push_back({current() + 1, "CREATE TABLE half (x INTEGER); SELECT no_such_function();"});
    EXPECT_THROW(SqliteStateStore::open(dir.path(), steps), StateError);
    RawDb raw(dbPath(dir));
    EXPECT_EQ(raw.integer("PRAGMA user_version"), current());
    EXPECT_EQ(raw.integer("SELECT count(*) FROM sqlite_schema WHERE name = 'half'"), 0);
    EXPECT_EQ(raw.integer("SELECT count(*) FROM contexts"), 1);
}

TEST(SqliteStateStore, MigrationsMustBeNumberedFromOne) {
    svad::test::ScratchDir dir("svad-state");
    std::vector<StateMigration> steps = SqliteStateStore::migrations();
    steps.push_back({current() + 2, "SELECT 1;"});
    try {
        SqliteStateStore::open(dir.path(), steps);
        ADD_FAILURE() << "a gap in the migrations was accepted";
    } catch (const StateError& e) {
        EXPECT_EQ(e.code(), StateError::Code::Schema);
        EXPECT_THAT(e.what(), HasSubstr("version " + std::to_string(current() + 2) + ", not " +
                                        std::to_string(current() + 1)));
    }
    EXPECT_FALSE(fs::exists(dbPath(dir)));
}

// The file of a moved-aside database, checked to be what was there.
void expectMovedAside(const StateOpenReport& r, const svad::test::ScratchDir& dir,
                      const std::string& what) {
    EXPECT_THAT(r.movedTo, HasSubstr(dbPath(dir) + "." + what + "-"));
    EXPECT_TRUE(fs::exists(r.movedTo)) << r.movedTo;
    EXPECT_FALSE(r.reason.empty());
}

TEST(SqliteStateStore, AFileOfRandomBytesIsMovedAsideAndAFreshStoreWorks) {
    svad::test::ScratchDir dir("svad-state");
    std::string junk(16384, '\0');
    std::mt19937 rng(20261130);
    for (auto& ch : junk) {
        ch = static_cast<char>(rng() & 0xff);
    }
    {
        std::ofstream(dbPath(dir), std::ios::binary) << junk;
        std::ofstream(dbPath(dir) + "-wal", std::ios::binary) << junk.substr(0, 1000);
    }
    LogCapture log;
    auto store = SqliteStateStore::open(dir.path());
    const auto& r = store->openReport();
    EXPECT_EQ(r.outcome, StateOpenReport::Outcome::MovedAsideCorrupt);
    expectMovedAside(r, dir, "corrupt");
    EXPECT_EQ(readFile(r.movedTo), junk);
    EXPECT_EQ(readFile(r.movedTo + "-wal"), junk.substr(0, 1000));
    EXPECT_THAT(r.reason, HasSubstr("not a database"));
    ASSERT_EQ(log.lines.size(), 1U) << log.all();
    EXPECT_THAT(log.lines[0], HasSubstr("error: state database is corrupt"));
    EXPECT_THAT(log.lines[0], HasSubstr(r.movedTo));
    EXPECT_EQ(r.version, current());

    EXPECT_EQ(store->takeContextId(), 1U);
    store->putContext(smallContext(1, "fresh"));
    store.reset();
    auto again = SqliteStateStore::open(dir.path());
    EXPECT_EQ(again->openReport().outcome, StateOpenReport::Outcome::Opened);
    EXPECT_EQ(again->contexts().size(), 1U);
}

TEST(SqliteStateStore, ATruncatedDatabaseIsMovedAside) {
    svad::test::ScratchDir dir("svad-state");
    {
        auto store = SqliteStateStore::open(dir.path());
        for (uint64_t i = 1; i <= 200; ++i) {
            store->putContext(fullContext(i));
        }
    }
    ASSERT_FALSE(fs::exists(dbPath(dir) + "-wal")); // checkpointed into the file
    auto size = fs::file_size(dbPath(dir));
    ASSERT_GT(size, 8 * kPage);
    fs::resize_file(dbPath(dir), size / 2);

    LogCapture log;
    auto store = SqliteStateStore::open(dir.path());
    const auto& r = store->openReport();
    EXPECT_EQ(r.outcome, StateOpenReport::Outcome::MovedAsideCorrupt) << r.reason;
    expectMovedAside(r, dir, "corrupt");
    EXPECT_EQ(fs::file_size(r.movedTo), size / 2);
    EXPECT_THAT(log.all(), HasSubstr("corrupt"));
    EXPECT_TRUE(store->contexts().empty());
    EXPECT_EQ(store->takeContextId(), 1U);
}

// Whole in size but with a damaged page: only PRAGMA integrity_check sees it.
TEST(SqliteStateStore, ADatabaseWithADamagedPageIsMovedAside) {
    svad::test::ScratchDir dir("svad-state");
    {
        auto store = SqliteStateStore::open(dir.path());
        for (uint64_t i = 1; i <= 200; ++i) {
            store->putContext(fullContext(i));
        }
    }
    auto size = fs::file_size(dbPath(dir));
    ASSERT_GT(size, 8 * kPage);
    {
        std::fstream f(dbPath(dir), std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(static_cast<std::streamoff>(size - 2 * kPage));
        std::string zeros(kPage, '\0');
        f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    }
    ASSERT_EQ(fs::file_size(dbPath(dir)), size);

    LogCapture log;
    auto store = SqliteStateStore::open(dir.path());
    const auto& r = store->openReport();
    EXPECT_EQ(r.outcome, StateOpenReport::Outcome::MovedAsideCorrupt) << r.reason;
    EXPECT_THAT(r.reason, HasSubstr("integrity_check"));
    expectMovedAside(r, dir, "corrupt");
    EXPECT_THAT(log.all(), HasSubstr("REASON=integrity_check"));
    EXPECT_TRUE(store->contexts().empty());
}

TEST(SqliteStateStore, ADatabaseOfANewerSvadIsMovedAsideUntouched) {
    svad::test::ScratchDir dir("svad-state");
    {
        auto store = SqliteStateStore::open(dir.path());
        store->putContext(smallContext(5, "kept"));
    }
    RawDb(dbPath(dir)).exec("PRAGMA user_version = 999");

    LogCapture log;
    auto store = SqliteStateStore::open(dir.path());
    const auto& r = store->openReport();
    EXPECT_EQ(r.outcome, StateOpenReport::Outcome::MovedAsideNewer);
    EXPECT_EQ(r.foundVersion, 999);
    EXPECT_EQ(r.version, current());
    expectMovedAside(r, dir, "newer");
    EXPECT_THAT(r.reason, HasSubstr("999"));
    EXPECT_THAT(log.all(), HasSubstr("error: state database is from a newer svad"));
    EXPECT_TRUE(store->contexts().empty());
    {
        RawDb moved(r.movedTo);
        EXPECT_EQ(moved.integer("PRAGMA user_version"), 999);
        EXPECT_EQ(moved.integer("SELECT count(*) FROM contexts WHERE vm = 'kept'"), 1);
    }
    EXPECT_EQ(RawDb(dbPath(dir)).integer("PRAGMA user_version"), current());
}

TEST(SqliteStateStore, ADatabaseThatIsNotSvadsIsMovedAside) {
    svad::test::ScratchDir dir("svad-state");
    RawDb(dbPath(dir)).exec("CREATE TABLE something_else (x INTEGER)");
    auto store = SqliteStateStore::open(dir.path());
    EXPECT_EQ(store->openReport().outcome, StateOpenReport::Outcome::MovedAsideCorrupt);
    EXPECT_THAT(store->openReport().reason, HasSubstr("not an svad state database"));
}

TEST(SqliteStateStore, MovingAsideTwiceKeepsBoth) {
    svad::test::ScratchDir dir("svad-state");
    std::vector<std::string> moved;
    for (const char* junk : {"first junk, long enough to be no database header",
                             "second junk, long enough to be no database header"}) {
        std::ofstream(dbPath(dir), std::ios::binary) << junk;
        auto store = SqliteStateStore::open(dir.path());
        moved.push_back(store->openReport().movedTo);
    }
    ASSERT_EQ(moved.size(), 2U);
    EXPECT_NE(moved[0], moved[1]);
    EXPECT_THAT(readFile(moved[0]), HasSubstr("first"));
    EXPECT_THAT(readFile(moved[1]), HasSubstr("second"));
}

TEST(SqliteStateStore, AStateDirectoryThatCannotBeMadeIsAStateError) {
    svad::test::ScratchDir dir("svad-state");
    std::ofstream(dir.path() + "/file") << "x";
    try {
        SqliteStateStore::open(dir.path() + "/file");
        ADD_FAILURE() << "opened a store under a plain file";
    } catch (const StateError& e) {
        EXPECT_EQ(e.code(), StateError::Code::Io) << e.what();
        EXPECT_THAT(e.what(), HasSubstr("state store: open("));
    }
}

} // namespace
