#include "svad/linux/state_sqlite.h"

#include "svad/core/log.h"
#include "svad/core/thread_name.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sqlite3.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>

namespace svad::linux_impl {

namespace fs = std::filesystem;
using ports::StateError;

// The statements of the calls made for every context, prepared once for the
// connection: preparing is most of what a small write costs.
struct SqliteStateStore::Statements {
    explicit Statements(sqlite3* connection) : db(connection) {}
    ~Statements() {
        for (auto& [sql, stmt] : kept) {
            sqlite3_finalize(stmt);
        }
    }
    Statements(const Statements&) = delete;
    Statements& operator=(const Statements&) = delete;

    sqlite3* db;
    std::unordered_map<const char*, sqlite3_stmt*> kept; // by the SQL text's address
};

namespace {

constexpr int kBusyTimeoutMs = 5000;
// The WAL is copied back into the database once it holds this many pages
// (SQLite's own default for its automatic checkpoint).
constexpr int kCheckpointPages = 1000;
constexpr const char* kNextContextId = "next_context_id";
// Context ids up to (not including) this one may have been handed out: it is
// written durably (synchronous=FULL) a block ahead of next_context_id.
constexpr const char* kContextIdsReserved = "context_ids_reserved";
// The boot the other meta values were written in (a hash of its boot_id).
constexpr const char* kBootIdHash = "boot_id_hash";
// How far ahead the reservation runs: one durable write per kIdBlock ids.
constexpr uint64_t kIdBlock = 1024;

// Version 1: the first schema. Integers that are uint64_t in the records are
// stored as their int64_t bit pattern.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES ('next_context_id', 1);
CREATE TABLE contexts (
    id INTEGER PRIMARY KEY NOT NULL,
    vm TEXT NOT NULL,
    owner_uid INTEGER NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_start_time INTEGER NOT NULL,
    owner_bus_name TEXT NOT NULL,
    mode INTEGER NOT NULL,
    ioas_id INTEGER NOT NULL,
    fault_queue_id INTEGER NOT NULL,
    created_usec INTEGER NOT NULL
) STRICT;
CREATE TABLE context_devices (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    device TEXT NOT NULL,
    kind INTEGER NOT NULL,
    dev_id INTEGER NOT NULL,
    plugin TEXT NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (context, position)
) STRICT;
CREATE TABLE context_pasids (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    pasid INTEGER NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (context, pasid)
) STRICT;
CREATE TABLE context_virtual_ids (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    virtual_id INTEGER NOT NULL,
    PRIMARY KEY (context, device)
) STRICT;
CREATE TABLE auto_binds (
    address TEXT PRIMARY KEY NOT NULL,
    previous_driver TEXT NOT NULL,
    previous_override TEXT NOT NULL,
    context INTEGER NOT NULL
) STRICT;
)sql";

// Version 2: what fstat said of each fd a context keeps in the service
// manager's store, to check the fd handed back at the next start.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE context_fds (
    context INTEGER NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    type INTEGER NOT NULL,
    rdev INTEGER NOT NULL,
    PRIMARY KEY (context, name)
) STRICT;
)sql";

StateError::Code codeOf(int rc) {
    switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        return StateError::Code::Io;
    case SQLITE_FULL:
        return StateError::Code::Full;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return StateError::Code::Busy;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return StateError::Code::ReadOnly;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return StateError::Code::Corrupt;
    case SQLITE_CONSTRAINT:
        return StateError::Code::Constraint;
    case SQLITE_SCHEMA:
    case SQLITE_ERROR:
        return StateError::Code::Schema;
    default:
        return StateError::Code::Other;
    }
}

[[noreturn]] void fail(sqlite3* db, int rc, const std::string& operation) {
    std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    throw StateError(codeOf(rc), operation, detail + " [sqlite " + std::to_string(rc) + "]");
}

int64_t asStored(uint64_t v) {
    return static_cast<int64_t>(v);
}
uint64_t asU64(int64_t v) {
    return static_cast<uint64_t>(v);
}

// A prepared statement. Text is bound without a copy: the strings must live
// until the statement has run, so temporaries are refused.
class Stmt {
public:
    Stmt(sqlite3* db, const char* sql, const std::string& operation)
        : db_(db), operation_(operation) {
        int rc = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
        if (rc != SQLITE_OK) {
            fail(db, rc, operation);
        }
    }
    // One of the store's kept statements (see Statements): prepared the first
    // time, reset after each use.
    Stmt(SqliteStateStore::Statements& kept, const char* sql, const std::string& operation);
    ~Stmt() {
        if (kept_) {
            sqlite3_reset(stmt_);
            sqlite3_clear_bindings(stmt_);
        } else {
            sqlite3_finalize(stmt_);
        }
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int i, int64_t v) {
        check(sqlite3_bind_int64(stmt_, i, v));
        return *this;
    }
    Stmt& bind(int i, const std::string& v) {
        check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), nullptr));
        return *this;
    }
    Stmt& bind(int i, const char* v) {
        check(sqlite3_bind_text(stmt_, i, v, -1, nullptr));
        return *this;
    }
    Stmt& bind(int i, std::string&& v) = delete;

    // True while there is a row.
    bool step() {
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) {
            return true;
        }
        if (rc != SQLITE_DONE) {
            fail(db_, rc, operation_);
        }
        return false;
    }
    void run() {
        while (step()) {
        }
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
    }

    int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
    std::string text(int col) const {
        const auto* p = sqlite3_column_text(stmt_, col);
        int n = sqlite3_column_bytes(stmt_, col);
        return p != nullptr ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
    }

private:
    void check(int rc) {
        if (rc != SQLITE_OK) {
            fail(db_, rc, operation_);
        }
    }

    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
    std::string operation_;
    bool kept_ = false;
};

Stmt::Stmt(SqliteStateStore::Statements& kept, const char* sql, const std::string& operation)
    : db_(kept.db), operation_(operation), kept_(true) {
    auto it = kept.kept.find(sql);
    if (it == kept.kept.end()) {
        sqlite3_stmt* stmt = nullptr;
        int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
        if (rc != SQLITE_OK) {
            fail(db_, rc, operation);
        }
        it = kept.kept.emplace(sql, stmt).first;
    }
    stmt_ = it->second;
}

void exec(sqlite3* db, const char* sql, const std::string& operation) {
    int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
        fail(db, rc, operation);
    }
}

// BEGIN IMMEDIATE ... COMMIT; rolled back unless committed.
class Transaction {
public:
    Transaction(sqlite3* db, std::string operation) : db_(db), operation_(std::move(operation)) {
        exec(db_, "BEGIN IMMEDIATE", operation_);
    }
    Transaction(SqliteStateStore::Statements& kept, std::string operation)
        : db_(kept.db), kept_(&kept), operation_(std::move(operation)) {
        Stmt(kept, "BEGIN IMMEDIATE", operation_).run();
    }
    ~Transaction() {
        if (!done_) {
            sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        }
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit() {
        if (kept_ != nullptr) {
            Stmt(*kept_, "COMMIT", operation_).run();
        } else {
            exec(db_, "COMMIT", operation_);
        }
        done_ = true;
    }

private:
    sqlite3* db_;
    SqliteStateStore::Statements* kept_ = nullptr;
    std::string operation_;
    bool done_ = false;
};

int64_t pragmaInt(sqlite3* db, const char* sql, const std::string& operation) {
    Stmt s(db, sql, operation);
    return s.step() ? s.integer(0) : 0;
}

struct CloseDb {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, CloseDb>;

std::string utcStamp() {
    std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    if (std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm) == 0) {
        return std::to_string(now);
    }
    return buf;
}

std::string errnoText(int err) {
    return std::strerror(err);
}

void syncDir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

void ensureDir(const std::string& dir) {
    std::error_code ec;
    if (fs::is_directory(dir, ec)) {
        return;
    }
    fs::path p(dir);
    if (p.has_parent_path()) {
        fs::create_directories(p.parent_path(), ec);
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && !fs::is_directory(dir, ec)) {
        int err = errno;
        throw StateError(StateError::Code::Io, "open(" + dir + ")",
                         "cannot create the state directory: " + errnoText(err));
    }
}

// DIR/state.lock, 0600, with a write lock on it for as long as the store is
// open (an open file description lock: it is the store's, not the process's).
// A second svad on the same directory is refused: its ids and records would
// cross the first one's.
int lockDir(const std::string& dir, const std::string& operation) {
    const std::string path = (fs::path(dir) / "state.lock").string();
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int err = errno;
        throw StateError(StateError::Code::Io, operation,
                         "cannot open the lock " + path + ": " + errnoText(err));
    }
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &lock) != 0) {
        int err = errno;
        ::close(fd);
        if (err == EAGAIN || err == EACCES) {
            throw StateError(StateError::Code::Busy, operation,
                             "the state directory is in use by another svad (" + path +
                                 " is locked)");
        }
        throw StateError(StateError::Code::Io, operation,
                         "cannot lock " + path + ": " + errnoText(err));
    }
    return fd;
}

// Creates the file 0600 if missing, and makes an existing one 0600. SQLite
// gives its -wal and -shm files the database's mode.
void preparePrivateFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int err = errno;
        throw StateError(err == EACCES || err == EROFS ? StateError::Code::ReadOnly
                                                       : StateError::Code::Io,
                         "open(" + path + ")", errnoText(err));
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && (st.st_mode & 07777) != 0600) {
        ::fchmod(fd, 0600);
    }
    ::close(fd);
}

// Renames path (with its -wal and -shm) to path.<what>-<UTC time>[.N].
std::string moveAside(const std::string& path, const std::string& what) {
    std::string base = path + "." + what + "-" + utcStamp();
    std::string target = base;
    std::error_code ec;
    for (int n = 1; fs::exists(target, ec) || fs::exists(target + "-wal", ec); ++n) {
        target = base + "." + std::to_string(n);
    }
    if (::rename(path.c_str(), target.c_str()) != 0) {
        int err = errno;
        throw StateError(StateError::Code::Io, "open(" + path + ")",
                         "cannot move the " + what + " database aside to " + target + ": " +
                             errnoText(err));
    }
    for (const char* suffix : {"-wal", "-shm"}) {
        std::string from = path + suffix;
        if (fs::exists(from, ec) && ::rename(from.c_str(), (target + suffix).c_str()) != 0) {
            int err = errno;
            throw StateError(StateError::Code::Io, "open(" + path + ")",
                             "cannot move " + from + " aside: " + errnoText(err));
        }
    }
    syncDir(fs::path(path).parent_path().string());
    return target;
}

// What inspecting an existing file found.
struct Inspection {
    enum class Verdict { Good, Corrupt, Newer } verdict = Verdict::Good;
    int version = 0;
    std::string reason;
};

Inspection inspect(sqlite3* db, int known, const std::string& operation) {
    Inspection out;
    const char* stage = "reading the schema version";
    try {
        int64_t v = pragmaInt(db, "PRAGMA user_version", operation);
        out.version = static_cast<int>(v);
        if (v > known) {
            out.verdict = Inspection::Verdict::Newer;
            out.reason = "its schema version " + std::to_string(v) +
                         " is newer than the newest this svad knows, " + std::to_string(known);
            return out;
        }
        if (v < 0) {
            out.verdict = Inspection::Verdict::Corrupt;
            out.reason = "its schema version is " + std::to_string(v);
            return out;
        }
        stage = "integrity_check";
        Stmt check(db, "PRAGMA integrity_check(5)", operation);
        std::vector<std::string> problems;
        while (check.step()) {
            std::string row = check.text(0);
            if (row != "ok") {
                problems.push_back(row);
            }
        }
        if (!problems.empty()) {
            out.verdict = Inspection::Verdict::Corrupt;
            out.reason = "integrity_check:";
            for (const auto& p : problems) {
                out.reason += " " + p + ";";
            }
            out.reason.pop_back();
            return out;
        }
        if (v == 0) {
            stage = "reading the tables";
            int64_t objects = pragmaInt(db, "SELECT count(*) FROM sqlite_schema", operation);
            if (objects > 0) {
                out.verdict = Inspection::Verdict::Corrupt;
                out.reason = "it has no schema version but holds " + std::to_string(objects) +
                             " tables or indexes: not an svad state database";
            }
        }
    } catch (const StateError& e) {
        if (e.code() != StateError::Code::Corrupt) {
            throw;
        }
        out.verdict = Inspection::Verdict::Corrupt;
        out.reason = std::string(stage) + ": " + e.detail();
    }
    return out;
}

void applySettings(sqlite3* db, const std::string& operation) {
    Stmt wal(db, "PRAGMA journal_mode = WAL", operation);
    std::string mode = wal.step() ? wal.text(0) : "";
    if (mode != "wal") {
        throw StateError(StateError::Code::Other, operation,
                         "the database refused WAL mode (journal_mode is '" + mode + "')");
    }
    // NORMAL: a commit is in the WAL, in the page cache, when it returns. It
    // survives svad's own crash or kill; only a crash of the host can lose it,
    // and that ends every context it describes as well. The context ids are
    // the exception (see settleContextIds), and they are kept durably apart.
    exec(db, "PRAGMA synchronous = NORMAL", operation);
    exec(db, "PRAGMA foreign_keys = ON", operation);
}

// The transactions made while it lives are on disk when they commit
// (synchronous=FULL); NORMAL again after it.
class Durable {
public:
    Durable(sqlite3* db, const std::string& operation) : db_(db) {
        exec(db_, "PRAGMA synchronous = FULL", operation);
    }
    ~Durable() { sqlite3_exec(db_, "PRAGMA synchronous = NORMAL", nullptr, nullptr, nullptr); }
    Durable(const Durable&) = delete;
    Durable& operator=(const Durable&) = delete;

private:
    sqlite3* db_;
};

std::optional<int64_t> readMeta(SqliteStateStore::Statements& db, const char* key,
                                const std::string& op) {
    Stmt s(db, "SELECT value FROM meta WHERE key = ?1", op);
    s.bind(1, key);
    if (!s.step()) {
        return std::nullopt;
    }
    return s.integer(0);
}

void writeMeta(SqliteStateStore::Statements& db, const char* key, int64_t value,
               const std::string& op) {
    Stmt s(db,
           "INSERT INTO meta (key, value) VALUES (?1, ?2) "
           "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
           op);
    s.bind(1, key).bind(2, value).run();
}

// FNV-1a: the boot id only has to compare equal to itself.
int64_t bootHash(const std::string& bootId) {
    uint64_t h = 14695981039346656037ULL;
    for (unsigned char c : bootId) {
        h = (h ^ c) * 1099511628211ULL;
    }
    return static_cast<int64_t>(h);
}

// Runs the steps above `from`; returns the version reached.
int migrate(sqlite3* db, const std::vector<StateMigration>& steps, int from,
            const std::string& operation) {
    int version = from;
    for (const auto& step : steps) {
        if (step.version <= version) {
            continue;
        }
        std::string op = operation + " migration to version " + std::to_string(step.version);
        Transaction t(db, op);
        // Another process may have run it meanwhile: the version read inside
        // the transaction is the one that counts.
        if (pragmaInt(db, "PRAGMA user_version", op) >= step.version) {
            version = step.version;
            continue;
        }
        exec(db, step.sql.c_str(), op);
        std::string setVersion = "PRAGMA user_version = " + std::to_string(step.version);
        exec(db, setVersion.c_str(), op);
        t.commit();
        version = step.version;
    }
    return version;
}

} // namespace

const char* outcomeName(StateOpenReport::Outcome o) {
    switch (o) {
    case StateOpenReport::Outcome::Created:
        return "created";
    case StateOpenReport::Outcome::Opened:
        return "opened";
    case StateOpenReport::Outcome::Migrated:
        return "migrated";
    case StateOpenReport::Outcome::MovedAsideCorrupt:
        return "moved-aside-corrupt";
    case StateOpenReport::Outcome::MovedAsideNewer:
        return "moved-aside-newer";
    }
    return "unknown";
}

const std::vector<StateMigration>& SqliteStateStore::migrations() {
    static const std::vector<StateMigration> kMigrations = {
        {1, kSchemaV1},
        {2, kSchemaV2},
    };
    return kMigrations;
}

std::string SqliteStateStore::currentBootId() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

std::unique_ptr<SqliteStateStore> SqliteStateStore::open(const std::string& dir,
                                                         const std::vector<StateMigration>& steps,
                                                         const std::string& bootId) {
    const std::string path = (fs::path(dir) / "state.db").string();
    const std::string operation = "open(" + path + ")";
    if (steps.empty()) {
        throw StateError(StateError::Code::Schema, operation, "no migrations are given");
    }
    for (size_t i = 0; i < steps.size(); ++i) {
        if (steps[i].version != static_cast<int>(i) + 1) {
            throw StateError(StateError::Code::Schema, operation,
                             "migration " + std::to_string(i) + " is for version " +
                                 std::to_string(steps[i].version) + ", not " +
                                 std::to_string(i + 1));
        }
    }
    const int known = steps.back().version;

    ensureDir(dir);
    struct Lock {
        int fd;
        ~Lock() {
            if (fd >= 0) {
                ::close(fd);
            }
        }
    } lock{lockDir(dir, operation)};
    StateOpenReport report;
    report.path = path;
    std::error_code ec;
    bool existed =
        (fs::exists(path, ec) && fs::file_size(path, ec) > 0) || fs::exists(path + "-wal", ec);

    for (int attempt = 0; attempt < 2; ++attempt) {
        preparePrivateFile(path);
        sqlite3* raw = nullptr;
        int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW,
                                 nullptr);
        DbPtr db(raw);
        if (rc != SQLITE_OK) {
            fail(raw, rc, operation);
        }
        sqlite3_extended_result_codes(raw, 1);
        sqlite3_busy_timeout(raw, kBusyTimeoutMs);
        // Until the database is trusted, closing must not checkpoint: that
        // would write into a file about to be moved aside, and delete its WAL.
        sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, static_cast<int*>(nullptr));

        Inspection found = inspect(raw, known, operation);
        if (found.verdict != Inspection::Verdict::Good) {
            if (attempt > 0) {
                throw StateError(StateError::Code::Corrupt, operation,
                                 "a new database is unusable: " + found.reason);
            }
            db.reset();
            bool newer = found.verdict == Inspection::Verdict::Newer;
            report.outcome = newer ? StateOpenReport::Outcome::MovedAsideNewer
                                   : StateOpenReport::Outcome::MovedAsideCorrupt;
            report.foundVersion = found.version;
            report.reason = found.reason;
            report.movedTo = moveAside(path, newer ? "newer" : "corrupt");
            log::error(std::string("state database ") +
                           (newer ? "is from a newer svad" : "is corrupt") +
                           ": moved it aside and starting with an empty state",
                       {{"PATH", path}, {"MOVED_TO", report.movedTo}, {"REASON", report.reason}});
            existed = false;
            continue;
        }

        sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, static_cast<int*>(nullptr));
        applySettings(raw, operation);
        int version = migrate(raw, steps, found.version, operation);
        report.version = version;
        if (report.outcome != StateOpenReport::Outcome::MovedAsideCorrupt &&
            report.outcome != StateOpenReport::Outcome::MovedAsideNewer) {
            report.foundVersion = found.version;
            if (!existed || found.version == 0) {
                report.outcome = StateOpenReport::Outcome::Created;
            } else if (found.version < version) {
                report.outcome = StateOpenReport::Outcome::Migrated;
                log::notice("state database migrated",
                            {{"PATH", path},
                             {"FROM_VERSION", std::to_string(found.version)},
                             {"VERSION", std::to_string(version)}});
            } else {
                report.outcome = StateOpenReport::Outcome::Opened;
            }
        }
        if (report.outcome != StateOpenReport::Outcome::Opened &&
            report.outcome != StateOpenReport::Outcome::Migrated) {
            syncDir(dir);
        }
        auto store = std::unique_ptr<SqliteStateStore>(
            new SqliteStateStore(db.release(), report, std::exchange(lock.fd, -1)));
        store->settleContextIds(bootId);
        return store;
    }
    throw StateError(StateError::Code::Other, operation, "unreachable");
}

// Copies the WAL back into the database on a thread and connection of its
// own, so that the fsyncs of a checkpoint never hold up a call of the store
// (svad makes them on its bus loop). A PASSIVE checkpoint waits for no
// reader or writer; one that cannot finish is tried again after the next
// commit.
class SqliteStateStore::Checkpointer {
public:
    Checkpointer(sqlite3* writer, const std::string& path) : writer_(writer) {
        sqlite3* raw = nullptr;
        int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW,
                                 nullptr);
        DbPtr db(raw);
        if (rc != SQLITE_OK) {
            fail(raw, rc, "open(" + path + ") for checkpoints");
        }
        sqlite3_busy_timeout(raw, kBusyTimeoutMs);
        // A connection finds the database in WAL mode when it first reads it;
        // until then a checkpoint does nothing.
        exec(raw, "SELECT count(*) FROM sqlite_schema", "open(" + path + ") for checkpoints");
        db_ = db.release();
        // The writer no longer checkpoints on its own: its commits tell this one.
        sqlite3_wal_hook(writer, &Checkpointer::committed, this);
        thread_ = std::thread([this] { run(); });
    }
    ~Checkpointer() {
        sqlite3_wal_hook(writer_, nullptr, nullptr);
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        cv_.notify_one();
        thread_.join();
        sqlite3_close_v2(db_);
    }
    Checkpointer(const Checkpointer&) = delete;
    Checkpointer& operator=(const Checkpointer&) = delete;

    uint64_t checkpoints() const { return done_.load(); }

private:
    static int committed(void* self, sqlite3* /*db*/, const char* /*name*/, int pages) {
        if (pages >= kCheckpointPages) {
            auto* c = static_cast<Checkpointer*>(self);
            {
                std::lock_guard<std::mutex> g(c->m_);
                c->due_ = true;
            }
            c->cv_.notify_one();
        }
        return SQLITE_OK;
    }

    void run() {
        core::nameThisThread("svad-state-ckpt");
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            cv_.wait(lock, [this] { return stop_ || due_; });
            if (stop_) {
                return;
            }
            due_ = false;
            lock.unlock();
            int logPages = 0;
            int copied = 0;
            int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &logPages,
                                               &copied);
            if (rc == SQLITE_OK && copied > 0) {
                done_.fetch_add(1);
                warned_ = false;
            } else if (rc != SQLITE_BUSY && !warned_) {
                // Once until one succeeds: the WAL grows meanwhile, nothing is lost.
                log::warning(std::string("state database: a checkpoint failed: ") +
                             sqlite3_errmsg(db_));
                warned_ = true;
            }
            lock.lock();
        }
    }

    sqlite3* writer_;
    sqlite3* db_ = nullptr;
    bool warned_ = false; // the checkpoint thread's own
    std::mutex m_;
    std::condition_variable cv_;
    bool due_ = false;
    bool stop_ = false;
    std::atomic<uint64_t> done_{0};
    std::thread thread_;
};

SqliteStateStore::SqliteStateStore(sqlite3* db, StateOpenReport report, int lockFd)
    : db_(db), lockFd_(lockFd), report_(std::move(report)), kept_(std::make_unique<Statements>(db)),
      checkpointer_(std::make_unique<Checkpointer>(db, report_.path)) {}

SqliteStateStore::~SqliteStateStore() {
    checkpointer_.reset();
    kept_.reset();
    sqlite3_close_v2(db_);
    ::close(lockFd_); // the lock goes last
}

uint64_t SqliteStateStore::checkpoints() const {
    return checkpointer_->checkpoints();
}

SqliteStateStore::Settings SqliteStateStore::settings() {
    Settings s;
    Stmt mode(db_, "PRAGMA journal_mode", "settings");
    s.journalMode = mode.step() ? mode.text(0) : "";
    s.synchronous = static_cast<int>(pragmaInt(db_, "PRAGMA synchronous", "settings"));
    s.foreignKeys = pragmaInt(db_, "PRAGMA foreign_keys", "settings") != 0;
    s.busyTimeoutMs = static_cast<int>(pragmaInt(db_, "PRAGMA busy_timeout", "settings"));
    return s;
}

namespace {

uint64_t readNext(SqliteStateStore::Statements& db, const std::string& op) {
    Stmt s(db, "SELECT value FROM meta WHERE key = ?1", op);
    s.bind(1, kNextContextId);
    if (!s.step()) {
        throw StateError(StateError::Code::Corrupt, op, "the next context id is missing");
    }
    return asU64(s.integer(0));
}

void writeNext(SqliteStateStore::Statements& db, uint64_t next, const std::string& op) {
    Stmt s(db, "UPDATE meta SET value = ?1 WHERE key = ?2", op);
    s.bind(1, asStored(next)).bind(2, kNextContextId).run();
}

void deleteContextRows(SqliteStateStore::Statements& db, uint64_t id, const std::string& op) {
    // The foreign keys cascade as well; deleting the rows by name does not
    // depend on the connection's foreign_keys setting.
    for (const char* sql : {"DELETE FROM context_devices WHERE context = ?1",
                            "DELETE FROM context_fds WHERE context = ?1",
                            "DELETE FROM context_pasids WHERE context = ?1",
                            "DELETE FROM context_virtual_ids WHERE context = ?1",
                            "DELETE FROM contexts WHERE id = ?1"}) {
        Stmt(db, sql, op).bind(1, asStored(id)).run();
    }
}

std::string opName(const char* name, uint64_t id) {
    return std::string(name) + "(" + std::to_string(id) + ")";
}

uint64_t readReserved(SqliteStateStore::Statements& db, uint64_t next, const std::string& op) {
    // A database of an svad before the reservation: what it handed out is below next.
    return asU64(readMeta(db, kContextIdsReserved, op).value_or(asStored(next)));
}

} // namespace

void SqliteStateStore::settleContextIds(const std::string& bootId) {
    const std::string op = "settleContextIds";
    Durable durable(db_, op);
    Transaction t(*kept_, op);
    uint64_t next = readNext(*kept_, op);
    const uint64_t reserved = readReserved(*kept_, next, op);
    const int64_t boot = bootHash(bootId);
    if (bootId.empty() || readMeta(*kept_, kBootIdHash, op) != boot) {
        // The host restarted since (or it cannot tell): the last commits may
        // have been lost with its page cache, the durable reservation was not.
        // No id below it is handed out again.
        next = std::max(next, reserved);
    }
    writeNext(*kept_, next, op);
    writeMeta(*kept_, kContextIdsReserved, asStored(next + kIdBlock), op);
    writeMeta(*kept_, kBootIdHash, boot, op);
    t.commit();
    next_ = next;
    reserved_ = next + kIdBlock;
}

void SqliteStateStore::reserveBelow(uint64_t next, const std::string& op) {
    if (next > reserved_) {
        // The reservation moves a block on, on disk before any id past it is used.
        Durable durable(db_, op);
        Transaction t(*kept_, op);
        writeMeta(*kept_, kContextIdsReserved, asStored(next + kIdBlock), op);
        t.commit();
        reserved_ = next + kIdBlock;
    }
}

void SqliteStateStore::setNext(uint64_t next, const std::string& op) {
    reserveBelow(next, op);
    Transaction t(*kept_, op);
    writeNext(*kept_, next, op);
    t.commit();
    next_ = next;
}

uint64_t SqliteStateStore::takeContextId() {
    const uint64_t id = next_;
    setNext(id + 1, "takeContextId");
    return id;
}

void SqliteStateStore::putContext(const ports::StoredContext& ctx) {
    const std::string op = opName("putContext", ctx.id);
    const bool raise = next_ <= ctx.id;
    if (raise) {
        reserveBelow(ctx.id + 1, op);
    }
    Transaction t(*kept_, op);
    deleteContextRows(*kept_, ctx.id, op);
    Stmt(*kept_,
         "INSERT INTO contexts (id, vm, owner_uid, owner_pid, owner_start_time, owner_bus_name, "
         "mode, ioas_id, fault_queue_id, created_usec) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
         op)
        .bind(1, asStored(ctx.id))
        .bind(2, ctx.vm)
        .bind(3, int64_t{ctx.ownerUid})
        .bind(4, int64_t{ctx.ownerPid})
        .bind(5, asStored(ctx.ownerStartTime))
        .bind(6, ctx.ownerBusName)
        .bind(7, int64_t{ctx.mode})
        .bind(8, int64_t{ctx.ioasId})
        .bind(9, int64_t{ctx.faultQueueId})
        .bind(10, asStored(ctx.createdUsec))
        .run();
    int64_t position = 0;
    for (const auto& d : ctx.devices) {
        Stmt(*kept_,
             "INSERT INTO context_devices (context, position, device, kind, dev_id, plugin, rule) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
             op)
            .bind(1, asStored(ctx.id))
            .bind(2, position++)
            .bind(3, d.id)
            .bind(4, int64_t{d.kind})
            .bind(5, int64_t{d.devId})
            .bind(6, d.plugin)
            .bind(7, d.rule)
            .run();
    }
    for (const auto& [pasid, device] : ctx.pasids) {
        Stmt(*kept_, "INSERT INTO context_pasids (context, pasid, device) VALUES (?1, ?2, ?3)", op)
            .bind(1, asStored(ctx.id))
            .bind(2, int64_t{pasid})
            .bind(3, device)
            .run();
    }
    for (const auto& [device, virtId] : ctx.virtualIds) {
        Stmt(*kept_,
             "INSERT INTO context_virtual_ids (context, device, virtual_id) VALUES (?1, ?2, ?3)",
             op)
            .bind(1, asStored(ctx.id))
            .bind(2, device)
            .bind(3, asStored(virtId))
            .run();
    }
    for (const auto& [name, identity] : ctx.fds) {
        Stmt(*kept_, "INSERT INTO context_fds (context, name, type, rdev) VALUES (?1, ?2, ?3, ?4)",
             op)
            .bind(1, asStored(ctx.id))
            .bind(2, name)
            .bind(3, int64_t{identity.type})
            .bind(4, asStored(identity.rdev))
            .run();
    }
    if (raise) {
        writeNext(*kept_, ctx.id + 1, op);
    }
    t.commit();
    if (raise) {
        next_ = ctx.id + 1;
    }
}

void SqliteStateStore::removeContext(uint64_t id) {
    const std::string op = opName("removeContext", id);
    Transaction t(*kept_, op);
    deleteContextRows(*kept_, id, op);
    t.commit();
}

void SqliteStateStore::putPasid(uint64_t context, uint32_t pasid, const std::string& device) {
    const std::string op = opName("putPasid", context);
    Transaction t(*kept_, op);
    Stmt(*kept_,
         "INSERT INTO context_pasids (context, pasid, device) VALUES (?1, ?2, ?3) "
         "ON CONFLICT (context, pasid) DO UPDATE SET device = excluded.device",
         op)
        .bind(1, asStored(context))
        .bind(2, int64_t{pasid})
        .bind(3, device)
        .run();
    t.commit();
}

void SqliteStateStore::removePasid(uint64_t context, uint32_t pasid) {
    const std::string op = opName("removePasid", context);
    Transaction t(*kept_, op);
    Stmt(*kept_, "DELETE FROM context_pasids WHERE context = ?1 AND pasid = ?2", op)
        .bind(1, asStored(context))
        .bind(2, int64_t{pasid})
        .run();
    t.commit();
}

void SqliteStateStore::putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) {
    const std::string op = opName("putVirtualId", context);
    Transaction t(*kept_, op);
    Stmt(*kept_,
         "INSERT INTO context_virtual_ids (context, device, virtual_id) VALUES (?1, ?2, ?3) "
         "ON CONFLICT (context, device) DO UPDATE SET virtual_id = excluded.virtual_id",
         op)
        .bind(1, asStored(context))
        .bind(2, device)
        .bind(3, asStored(virtId))
        .run();
    t.commit();
}

void SqliteStateStore::putAutoBind(const ports::AutoBindRecord& record) {
    const std::string op = "putAutoBind(" + record.address + ")";
    Transaction t(*kept_, op);
    Stmt(*kept_,
         "INSERT INTO auto_binds (address, previous_driver, previous_override, context) "
         "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (address) DO UPDATE SET "
         "previous_driver = excluded.previous_driver, "
         "previous_override = excluded.previous_override, context = excluded.context",
         op)
        .bind(1, record.address)
        .bind(2, record.previousDriver)
        .bind(3, record.previousOverride)
        .bind(4, asStored(record.context))
        .run();
    t.commit();
}

void SqliteStateStore::removeAutoBind(const std::string& address) {
    const std::string op = "removeAutoBind(" + address + ")";
    Transaction t(*kept_, op);
    Stmt(*kept_, "DELETE FROM auto_binds WHERE address = ?1", op).bind(1, address).run();
    t.commit();
}

std::vector<ports::StoredContext> SqliteStateStore::contexts() {
    const std::string op = "contexts";
    exec(db_, "BEGIN", op);
    struct End {
        sqlite3* db;
        ~End() { sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr); }
    } end{db_};

    std::vector<ports::StoredContext> out;
    Stmt rows(db_,
              "SELECT id, vm, owner_uid, owner_pid, owner_start_time, owner_bus_name, mode, "
              "ioas_id, fault_queue_id, created_usec FROM contexts",
              op);
    while (rows.step()) {
        ports::StoredContext c;
        c.id = asU64(rows.integer(0));
        c.vm = rows.text(1);
        c.ownerUid = static_cast<uint32_t>(rows.integer(2));
        c.ownerPid = static_cast<int32_t>(rows.integer(3));
        c.ownerStartTime = asU64(rows.integer(4));
        c.ownerBusName = rows.text(5);
        c.mode = static_cast<uint32_t>(rows.integer(6));
        c.ioasId = static_cast<uint32_t>(rows.integer(7));
        c.faultQueueId = static_cast<uint32_t>(rows.integer(8));
        c.createdUsec = asU64(rows.integer(9));
        out.push_back(std::move(c));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (auto& c : out) {
        Stmt devices(db_,
                     "SELECT device, kind, dev_id, plugin, rule FROM context_devices "
                     "WHERE context = ?1 ORDER BY position",
                     op);
        devices.bind(1, asStored(c.id));
        while (devices.step()) {
            c.devices.push_back({devices.text(0), static_cast<uint32_t>(devices.integer(1)),
                                 static_cast<uint32_t>(devices.integer(2)), devices.text(3),
                                 devices.text(4)});
        }
        Stmt pasids(db_, "SELECT pasid, device FROM context_pasids WHERE context = ?1", op);
        pasids.bind(1, asStored(c.id));
        while (pasids.step()) {
            c.pasids[static_cast<uint32_t>(pasids.integer(0))] = pasids.text(1);
        }
        Stmt vids(db_, "SELECT device, virtual_id FROM context_virtual_ids WHERE context = ?1", op);
        vids.bind(1, asStored(c.id));
        while (vids.step()) {
            c.virtualIds[vids.text(0)] = asU64(vids.integer(1));
        }
        Stmt fds(db_, "SELECT name, type, rdev FROM context_fds WHERE context = ?1", op);
        fds.bind(1, asStored(c.id));
        while (fds.step()) {
            c.fds[fds.text(0)] = {static_cast<uint32_t>(fds.integer(1)), asU64(fds.integer(2))};
        }
    }
    return out;
}

std::vector<ports::AutoBindRecord> SqliteStateStore::autoBinds() {
    const std::string op = "autoBinds";
    std::vector<ports::AutoBindRecord> out;
    Stmt rows(db_,
              "SELECT address, previous_driver, previous_override, context FROM auto_binds "
              "ORDER BY address",
              op);
    while (rows.step()) {
        out.push_back({rows.text(0), rows.text(1), rows.text(2), asU64(rows.integer(3))});
    }
    return out;
}

uint64_t SqliteStateStore::peekNextContextId() {
    return next_;
}

void SqliteStateStore::raiseNextContextId(uint64_t atLeast) {
    const std::string op = opName("raiseNextContextId", atLeast);
    if (next_ < atLeast) {
        setNext(atLeast, op);
    }
}

} // namespace svad::linux_impl
