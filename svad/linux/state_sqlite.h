// The StateStore in an SQLite database, DIR/state.db (mode 0600), in WAL mode
// with synchronous=NORMAL: every call is one transaction, in the WAL when it
// returns, so that svad's own crash or kill loses nothing and a call costs no
// fsync. A crash of the host may lose the last transactions, together with
// every kernel object and process they describe.
//
// Context ids are the exception: no id is ever handed out twice, even after a
// crash of the host. The store reserves them a block ahead, durably
// (synchronous=FULL for that one transaction, once per 1024 ids), and notes
// the boot it runs in. Opened in another boot, it goes on from the end of the
// reservation, since the ids written after it may be lost; opened in the same
// boot, from the last id taken.
//
// Checkpoints (the WAL copied back into the database, with its fsyncs) run on
// a thread of the store's own with a connection of its own, told by the
// writer's commits; a call never waits for one. DIR/state.lock is locked
// while the store is open: a second store on the same directory, in svad or
// another process, is refused with StateError::Code::Busy.
//
// The schema's version is PRAGMA user_version; migrations() lists the steps
// from an empty file (version 0) to the version this svad writes, one step per
// version. A new schema is one more entry at the end of that list; an entry is
// never changed once released.
//
// Opening never builds on a database it cannot trust. One that is not a
// database, fails PRAGMA integrity_check, or is not svad's, is moved aside to
// state.db.corrupt-<UTC time>; one written by a newer svad (a user_version
// above the last migration) to state.db.newer-<UTC time>, with its -wal and
// -shm files. Either is logged as an error, and a new empty database is made in
// its place. OpenReport tells the caller which of these happened.
#pragma once

#include "svad/ports/state_store.h"

#include <memory>
#include <string>
#include <vector>

struct sqlite3;

namespace svad::linux_impl {

// One step of the schema: the SQL that takes a database of version-1 to
// version. It runs in one transaction with the new user_version.
struct StateMigration {
    int version = 0;
    std::string sql;
};

// What opening found and did.
struct StateOpenReport {
    enum class Outcome {
        Created,           // there was no database: a new one was made
        Opened,            // the database was of this version
        Migrated,          // the database was older and was migrated
        MovedAsideCorrupt, // it was damaged or not svad's: moved aside, a new one made
        MovedAsideNewer,   // it was of a newer svad: moved aside, a new one made
    };
    Outcome outcome = Outcome::Created;
    std::string path;     // DIR/state.db
    std::string movedTo;  // where the old file went (MovedAside*)
    std::string reason;   // why it was moved aside (MovedAside*)
    int foundVersion = 0; // the user_version found (0: none)
    int version = 0;      // the user_version now
};

const char* outcomeName(StateOpenReport::Outcome o);

class SqliteStateStore : public ports::StateStore {
public:
    // The schema this svad writes: version 1 and, later, the steps after it.
    static const std::vector<StateMigration>& migrations();

    // Opens or creates DIR/state.db (DIR is made, 0700, if missing). Throws
    // ports::StateError when the database cannot be opened or migrated, or when
    // `steps` is not 1, 2, ... n; moves a corrupt or newer database aside as
    // described above. `steps` is for the tests of the migrations.
    // `bootId` tells one boot of the host from another (currentBootId(); empty:
    // unknown, taken as a new boot each time).
    static std::unique_ptr<SqliteStateStore>
    open(const std::string& dir, const std::vector<StateMigration>& steps = migrations(),
         const std::string& bootId = currentBootId());
    // /proc/sys/kernel/random/boot_id; empty if it cannot be read.
    static std::string currentBootId();

    ~SqliteStateStore() override;
    SqliteStateStore(const SqliteStateStore&) = delete;
    SqliteStateStore& operator=(const SqliteStateStore&) = delete;

    const StateOpenReport& openReport() const { return report_; }

    // The connection's settings, as SQLite reports them now.
    struct Settings {
        std::string journalMode; // "wal"
        int synchronous = 0;     // 1: NORMAL
        bool foreignKeys = false;
        int busyTimeoutMs = 0;
    };
    Settings settings();

    uint64_t takeContextId() override;
    void putContext(const ports::StoredContext& ctx) override;
    void removeContext(uint64_t id) override;
    void putPasid(uint64_t context, uint32_t pasid, const std::string& device) override;
    void removePasid(uint64_t context, uint32_t pasid) override;
    void putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) override;
    void putAutoBind(const ports::AutoBindRecord& record) override;
    void removeAutoBind(const std::string& address) override;
    std::vector<ports::StoredContext> contexts() override;
    std::vector<ports::AutoBindRecord> autoBinds() override;
    uint64_t peekNextContextId() override;
    void raiseNextContextId(uint64_t atLeast) override;

    struct Statements; // the prepared statements it keeps (state_sqlite.cpp)

    // How many checkpoints (the WAL copied back into the database) its
    // checkpoint thread has made.
    uint64_t checkpoints() const;

private:
    SqliteStateStore(sqlite3* db, StateOpenReport report, int lockFd);
    // At open: where the ids go on from, for this boot.
    void settleContextIds(const std::string& bootId);
    // Moves the durable reservation on, if needed, so that ids below `next` are in it.
    void reserveBelow(uint64_t next, const std::string& op);
    // next_context_id = next, moving the durable reservation on first if needed.
    void setNext(uint64_t next, const std::string& op);

    sqlite3* db_;
    int lockFd_; // DIR/state.lock, locked while the store is open
    StateOpenReport report_;
    class Checkpointer;
    std::unique_ptr<Statements> kept_; // before db_ is closed
    std::unique_ptr<Checkpointer> checkpointer_;
    // next_context_id and the end of the durable reservation, as written: svad
    // is the one writer of its state.
    uint64_t next_ = 1;
    uint64_t reserved_ = 1;
};

} // namespace svad::linux_impl
