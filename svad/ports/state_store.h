// The port to svad's persistent state: what a restart must not lose. The
// contexts (their owner, devices, PASIDs and virtual IDs), the drivers svad
// rebound for auto_bind and has to give back, and the next context id.
// linux: an SQLite database under the state directory (svad/linux/
// state_sqlite.h); MemoryStateStore (state_store_memory.h) for the tests and
// for a run with no state directory.
//
// Every mutating call is one transaction and is durable when it returns, so
// the engine makes a change and only then sends the reply that reports it. A
// call that cannot do that throws StateError and changes nothing. The store is
// not thread-safe: one thread (the engine's loop) calls it.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace svad::ports {

// One device a context holds.
struct StoredDevice {
    std::string id;     // the device's name: a PCI address, "vdpa0", "wq0.1"
    uint32_t kind = 0;  // 1 vfio, 2 vdpa, 3 queue
    uint32_t devId = 0; // the kernel's id of the device in the context's iommufd
    std::string plugin; // the plugin that admitted it
    std::string rule;   // the rule of that plugin that admitted it
    bool operator==(const StoredDevice&) const = default;
};

// What fstat says of an fd svad keeps in the service manager's store, so
// that the fd handed back at the next start can be checked against it.
struct StoredFdIdentity {
    uint32_t type = 0; // st_mode & S_IFMT
    uint64_t rdev = 0; // st_rdev (0 for what is no device node)
    bool operator==(const StoredFdIdentity&) const = default;
};

struct StoredContext {
    uint64_t id = 0;
    std::string vm;
    uint32_t ownerUid = 0;
    int32_t ownerPid = 0;
    uint64_t ownerStartTime = 0; // field 22 of /proc/PID/stat, in clock ticks
    std::string ownerBusName;
    uint32_t mode = 0;
    uint32_t ioasId = 0;
    uint32_t faultQueueId = 0;
    uint64_t createdUsec = 0;
    std::vector<StoredDevice> devices;          // in the order given
    std::map<uint32_t, std::string> pasids;     // PASID -> device
    std::map<std::string, uint64_t> virtualIds; // device -> guest-visible ID
    // The fds kept in the service manager's store, by their name there
    // (fdStoreName): empty when svad keeps none.
    std::map<std::string, StoredFdIdentity> fds;
    bool operator==(const StoredContext&) const = default;
};

// A PCI function svad rebound to vfio-pci for a context, and what to give it
// back to. It outlives its context: it is removed once the driver is restored.
struct AutoBindRecord {
    std::string address;
    std::string previousDriver;   // empty: it had none
    std::string previousOverride; // driver_override before the rebind
    uint64_t context = 0;
    bool operator==(const AutoBindRecord&) const = default;
};

// Why a call of the store failed. Nothing of the call was applied.
class StateError : public std::runtime_error {
public:
    enum class Code {
        Io,         // the disk or the file system failed (EIO, a short write, ...)
        Full,       // the disk or the database is full
        Busy,       // another process holds the database
        ReadOnly,   // the database cannot be written
        Corrupt,    // the database is damaged
        Constraint, // the change contradicts the stored state (a PASID of no context, ...)
        Schema,     // the database or the migrations are not what this svad expects
        Other,
    };

    StateError(Code code, std::string operation, std::string detail)
        : std::runtime_error("state store: " + operation + ": " + detail), code_(code),
          operation_(std::move(operation)), detail_(std::move(detail)) {}

    Code code() const { return code_; }
    const std::string& operation() const { return operation_; } // "putContext(7)"
    const std::string& detail() const { return detail_; }

private:
    Code code_;
    std::string operation_;
    std::string detail_;
};

inline std::string_view codeName(StateError::Code c) {
    switch (c) {
    case StateError::Code::Io:
        return "io";
    case StateError::Code::Full:
        return "full";
    case StateError::Code::Busy:
        return "busy";
    case StateError::Code::ReadOnly:
        return "read-only";
    case StateError::Code::Corrupt:
        return "corrupt";
    case StateError::Code::Constraint:
        return "constraint";
    case StateError::Code::Schema:
        return "schema";
    case StateError::Code::Other:
        return "other";
    }
    return "other";
}

class StateStore {
public:
    virtual ~StateStore() = default;

    // The next context id, with next+1 persisted in the same transaction: an
    // id is never handed out twice, even when svad dies right after the call.
    // The first id is 1.
    virtual uint64_t takeContextId() = 0;
    // Inserts the context or replaces all of it (its devices, PASIDs and
    // virtual IDs included). The next context id is raised past ctx.id if it
    // is not already.
    virtual void putContext(const StoredContext& ctx) = 0;
    // Removes the context with its devices, PASIDs and virtual IDs; its
    // auto_bind records stay. No such context: nothing happens.
    virtual void removeContext(uint64_t id) = 0;
    // Adds or replaces one PASID of a stored context (no such context:
    // StateError Constraint).
    virtual void putPasid(uint64_t context, uint32_t pasid, const std::string& device) = 0;
    // No such PASID: nothing happens.
    virtual void removePasid(uint64_t context, uint32_t pasid) = 0;
    // Adds or replaces a device's virtual ID in a stored context (no such
    // context: StateError Constraint).
    virtual void putVirtualId(uint64_t context, const std::string& device, uint64_t virtId) = 0;
    // Adds or replaces the record of record.address.
    virtual void putAutoBind(const AutoBindRecord& record) = 0;
    // No such record: nothing happens.
    virtual void removeAutoBind(const std::string& address) = 0;

    // Every stored context, by id.
    virtual std::vector<StoredContext> contexts() = 0;
    // Every auto_bind record, by address.
    virtual std::vector<AutoBindRecord> autoBinds() = 0;
    // The id takeContextId would return, without taking it.
    virtual uint64_t peekNextContextId() = 0;
    // Raises the next context id to `atLeast` if it is lower (ids a fresh
    // database cannot know were handed out: those of fds the service manager
    // gave back).
    virtual void raiseNextContextId(uint64_t atLeast) = 0;
};

} // namespace svad::ports
