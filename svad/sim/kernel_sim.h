// The sim backend of the Kernel port: the semantics of iommufd, VFIO
// device cdevs, vhost-vdpa and idxd work queues, simulated in process.
//
// Every fd it hands out is real: a memfd (MFD_CLOEXEC) named after the
// object, so that passing fds over D-Bus is exercised for real and
// /proc/PID/fd shows what they are:
//
//     svad-sim:iommufd:3              an iommufd (3: the sim's instance number)
//     svad-sim:fault:3.7              fault queue object 7 of iommufd 3
//     svad-sim:vfio:vfio2             an open VFIO device cdev
//     svad-sim:vhost-vdpa:vhost-vdpa-0
//     svad-sim:wq:wq0.1
//
// (the links read "/memfd:svad-sim:... (deleted)"). The sim identifies the
// object behind an fd by the memfd's inode (fstat st_dev/st_ino), double
// checked against the link's name; any other fd is EBADF.
//
// Object lifetimes and the close rule
// -----------------------------------
// The sim follows the kernel, so that the engine code is the same on both
// backends:
//
//  - Object ids are per iommufd, one id space for IOASes, devices and fault
//    queues: the lowest free id from 1 (so a destroyed id comes back, as
//    with the kernel's xarray).
//  - A device binding (vfioBind) ends when the bound device fd is closed,
//    as in the kernel; there is no call for it. IOMMU_DESTROY of a device
//    id is EBUSY (the kernel's device object belongs to the binding).
//  - A bound device fd or an open fault queue fd keeps its iommufd context
//    alive after the iommufd itself is closed (the kernel's file references
//    do the same); the context goes with the last of them.
//  - A fault queue object can be destroyed only once its fd is closed
//    (EBUSY before: the kernel's fault fd holds a reference to the object).
//
// The sim cannot see close(2). It notices closes lazily by scanning
// /proc/self/fd for its memfd inodes: only svad's own copies count (the
// copies a VMM holds after fd passing don't; the engine enforces exclusivity
// between VMMs itself, and svad keeps its copies for as long as it relies on
// the object). The scan runs when an answer depends on whether a file is
// still open (a bind that conflicts with another binding of the same device;
// a destroy of a fault queue, of a device or of an IOAS with attachments;
// hwInfo of a device), every so often as new files are handed out (so closed
// objects don't accumulate), and on collect(). So "close the device fd, then
// destroy the IOAS" works as on the kernel, where the close unbinds at once.
// (A scan can miss a file whose only fd another thread moves with dup2 and
// close at that very moment; svad keeps its copies where they are.)
//
// Persistence
// -----------
// A real kernel outlives svad: when svad restarts and gets its fds back from
// systemd's fd store (the same open files, so the same memfd inodes), the
// objects behind them are still there, bound and attached. The sim models
// that when asked to: persistIn(path) keeps the sim's state (its files,
// contexts, objects, bindings and the next iommufd instance number) in a
// file, written again after every change of it, so that a KernelSim in the
// next process (or a second instance in the same one) takes it over.
//
//  - On load, only the files whose memfds this process holds right now
//    survive (inode and name must match, as on a lookup): the others are
//    dropped as a close drops them, so their bindings end, the IOAS
//    attachment counts fall and contexts with no file left go. As
//    everywhere in the sim, only this process's copies count.
//  - Instance numbers continue past the loaded ones: a new iommufd never
//    gets the number of one that may still be alive.
//  - A missing file is a fresh kernel. So is a file that can't be read or
//    is malformed: the loader takes the whole file or nothing, and
//    lastLoadError() says why it took nothing.
//  - Each write goes to "<path>.tmp" and is renamed over the file, so a
//    process killed mid-write leaves the old state or the new one. There is
//    no fsync: the state describes a kernel that a reboot ends anyway.
//  - One KernelSim per file at a time (they don't lock the file).
//
// The file is text: the line "svad-kernel-sim 1", the line "next <N>", then
// one line per context, object, file, binding and attachment, then "end".
// Names are percent-encoded (no spaces; "%" alone is the empty name).
//
// Errors are KernelErrors with the errno and "<ioctl> on <object>: <strerror>".
// Errnos, where the brief that defines the sim decides them:
//   bind of a device fd already bound, or of a device bound through another
//   open fd: EBUSY; detach of what is not attached: EINVAL; an attach with a
//   PASID on a device whose PASID log2 is 0: EOPNOTSUPP; PASID 0 or
//   >= 2^log2: EINVAL; an unknown pt_id: ENOENT (a pt_id that is no IOAS:
//   EINVAL); destroy of an unknown id: ENOENT; of an IOAS something is
//   attached to: EBUSY; any call before a bind: EINVAL; a call on the wrong
//   kind of file: ENOTTY; an iommufd argument that is no iommufd: EBADFD.
// (Mainline answers a second bind with EINVAL and a detach of nothing with
// success: callers must not tell these cases apart by errno.)
//
// Thread-safe: one mutex inside (the state file of persistIn is written
// under it).
#pragma once

#include "svad/core/model.h"
#include "svad/ports/kernel.h"

#include <compare>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace svad::sim {

// Which parts of the uAPI the simulated kernel was "built with". All on by
// default; tests switch some off.
struct SimFeatures {
    bool iommufd = true;     // off: openIommufd is ENOENT (and everything iommufd with it)
    bool rlimitMode = true;  // reported only
    bool hwInfo = true;      // off: hwInfo is ENOTTY
    bool faultQueue = true;  // off: faultQueueAlloc is ENOTTY
    bool vfioCdev = true;    // off: openVfioDevice is ENOENT
    bool pasidAttach = true; // off: attach/detach with a PASID is EINVAL, hwInfo reports log2 0
    bool vhostVdpa = true;   // off: openVhostVdpa is ENOENT
    bool idxd = true;        // off: openWorkQueue is ENOENT

    // Sets a feature by its KernelFeatures name ("faultQueue"); false if
    // there is no such feature.
    bool set(std::string_view name, bool on);
};

struct SimVdpa {
    uint32_t groups = 2;
    uint32_t addressSpaces = 2;
};

struct SimConfig {
    std::map<std::string, uint8_t> vfio;      // vfioN -> max PASID log2 (0: no PASID)
    std::map<std::string, SimVdpa> vhostVdpa; // vhost-vdpa-N -> group and AS counts
    std::set<std::string> workQueues;         // wqX.Y
    SimFeatures features;
    // For messages ("open /dev/vfio/devices/vfio9: ..."), and the root of the
    // nodes grantNode and revokeNode name. The sim touches the file system
    // there only with nodeAcls.
    std::string devRoot = "/dev";
    // grantNode and revokeNode set the real POSIX ACL on the node file under
    // devRoot (a generated tree: svad's sim backend sets it); off, they only
    // record the grants (grants()), for a node of a known work queue.
    bool nodeAcls = false;

    // The devices of a discovered host: every PciDevice with a vfioDevice
    // (PASID log2 = min(the device's PASID width, its unit's VT-d PASID
    // width when the unit has VtdCaps), 0 without a PASID capability), every
    // VdpaDevice with a vhostDevice (2 groups, 2 address spaces), every
    // SiovQueue with a charDevice. All features on.
    static SimConfig fromHost(const core::Host& host, const std::string& devRoot);
    // The PASID log2 fromHost gives the function at `address` (0 when unknown).
    static uint8_t pasidLog2(const core::Host& host, const std::string& address);
};

// What the sim is tracking (for tests and diagnostics).
struct SimStats {
    size_t files = 0;       // memfds handed out and not yet seen closed
    size_t contexts = 0;    // iommufd contexts alive
    size_t objects = 0;     // objects in all contexts
    size_t bindings = 0;    // bound device files
    size_t attachments = 0; // RID and PASID attachments of bound devices
};

class KernelSim final : public ports::Kernel {
public:
    explicit KernelSim(SimConfig config);
    ~KernelSim() override;

    KernelSim(const KernelSim&) = delete;
    KernelSim& operator=(const KernelSim&) = delete;

    ports::KernelFeatures probe() override;

    ports::Result<ports::UniqueFd> openIommufd() override;
    ports::Result<uint32_t> ioasAlloc(int iommufd) override;
    ports::Result<std::vector<ports::IovaRange>> ioasIovaRanges(int iommufd,
                                                                uint32_t ioasId) override;
    ports::Status destroy(int iommufd, uint32_t objectId) override;
    ports::Result<ports::HwInfo> hwInfo(int iommufd, uint32_t devId) override;
    ports::Result<ports::FaultQueue> faultQueueAlloc(int iommufd) override;

    ports::Result<ports::UniqueFd> openVfioDevice(const std::string& vfioName) override;
    ports::Result<uint32_t> vfioBind(int deviceFd, int iommufd) override;
    ports::Status vfioAttach(int deviceFd, uint32_t ptId, std::optional<uint32_t> pasid) override;
    ports::Status vfioDetach(int deviceFd, std::optional<uint32_t> pasid) override;

    ports::Result<ports::UniqueFd> openVhostVdpa(const std::string& vhostName) override;
    ports::Result<uint32_t> vdpaGroupNum(int vhostFd) override;
    ports::Result<uint32_t> vdpaAsNum(int vhostFd) override;

    ports::Result<ports::UniqueFd> openWorkQueue(const std::string& wqName) override;

    std::string nodePath(const std::string& node) const override;
    ports::Status grantNode(const std::string& path, uid_t uid) override;
    ports::Status revokeNode(const std::string& path, uid_t uid) override;
    // The uids granted each node now (node path -> uids).
    std::map<std::string, std::set<uid_t>> grants() const;

    // Keeps the sim's state in the file at `path` from now on (see
    // Persistence above); call it before anything else. Loads the state
    // saved there if the file exists, replacing this instance's; false when
    // the file was there but unreadable or malformed (then the state stays
    // as it was: a fresh kernel for a new instance, and the next write
    // replaces the file).
    bool persistIn(const std::string& path);
    // Why the last persistIn loaded nothing from an existing file; empty
    // when it loaded the file or there was none.
    std::string lastLoadError() const;
    // Why the last write of the state file failed; empty after a success.
    // A failed write is tried again on the next change.
    std::string lastSaveError() const;

    // Scans /proc/self/fd now and forgets the files that were closed
    // (ending their bindings, dropping contexts nothing keeps alive).
    void collect();
    SimStats stats() const;
    SimConfig config() const;
    // The host changed (a rescan): devices come and go; features stay as probed.
    void setDevices(const SimConfig& devices);
    // A function was just bound to vfio-pci (the sim driver binder): its cdev appears.
    void addVfioDevice(const std::string& vfioName, uint8_t pasidLog2);

    // The IOVA ranges of every IOAS: [0, 2^48 - 1] minus the MSI window.
    static constexpr uint64_t kMsiStart = 0xfee00000;
    static constexpr uint64_t kMsiLast = 0xfeefffff;
    static constexpr uint64_t kIovaLast = (uint64_t{1} << 48) - 1;
    static constexpr uint32_t kHwInfoTypeIntelVtd = 1;

private:
    struct FileKey {
        uint64_t dev = 0;
        uint64_t ino = 0;
        auto operator<=>(const FileKey&) const = default;
    };
    enum class FileKind { Iommufd, Vfio, Fault, VhostVdpa, WorkQueue };
    struct Binding {
        uint32_t ctx = 0;
        uint32_t devId = 0;
        std::optional<uint32_t> ridIoas;        // attached without a PASID
        std::map<uint32_t, uint32_t> pasidIoas; // PASID -> IOAS
    };
    struct File {
        FileKind kind = FileKind::Iommufd;
        std::string memfdName;          // svad-sim:vfio:vfio2
        std::string label;              // vfio2, iommufd:3, fault:3.7
        uint32_t ctx = 0;               // Iommufd, Fault
        uint32_t faultId = 0;           // Fault
        std::optional<Binding> binding; // Vfio
    };
    enum class ObjectKind { Ioas, Device, Fault };
    struct Object {
        ObjectKind kind = ObjectKind::Ioas;
        uint32_t attachments = 0; // Ioas: device RIDs and PASIDs attached to it
        FileKey file;             // Device: the bound file; Fault: its fd
        std::string device;       // Device: vfioN
    };
    // An iommufd context lives while its iommufd, a device bound to it or
    // one of its fault queue fds is open.
    struct Context {
        std::map<uint32_t, Object> objects;
        uint32_t allocId() const; // the lowest free id >= 1, as the kernel's xarray
    };
    using Files = std::map<FileKey, File>;
    // What persistIn saves and loads.
    struct State {
        Files files;
        std::map<uint32_t, Context> contexts;
        uint32_t nextInstance = 1;
    };
    // The mutex, held for a call; when released, the state file is written
    // if the state changed.
    class Locked;

    // Creates the memfd for `file` and registers it; *key gets its inode.
    ports::Result<ports::UniqueFd> makeFileLocked(File file, FileKey* key = nullptr);
    ports::Result<ports::UniqueFd> openNodeLocked(FileKind kind, bool featureOn,
                                                  const char* feature, bool known,
                                                  const std::string& relPath,
                                                  const std::string& memfdPrefix,
                                                  const std::string& name);
    // The file behind fd, or nullptr with *err set (EBADF).
    File* boundVfioLocked(int deviceFd, const std::string& op, std::optional<uint32_t> pasid,
                          std::string& what, ports::KernelError& err);
    File* lookupLocked(int fd, const std::string& op, ports::KernelError* err,
                       FileKey* key = nullptr);
    // The memfd inodes this process holds; nullopt when /proc/self/fd can't
    // be read (then every file counts as open). With checkNames, an fd
    // counts only if its link also names the file's memfd (inode numbers of
    // another process's closed files come back).
    std::optional<std::set<FileKey>> openKeys(bool checkNames = false) const;
    void sweepLocked(bool checkNames = false);
    void releaseFileLocked(Files::iterator it);
    void dropContextIfUnusedLocked(uint32_t ctx);
    void detachAllLocked(Binding& b);
    void unrefIoasLocked(Context& c, uint32_t ioasId);
    uint8_t pasidLog2(const std::string& vfioName) const;
    std::string serializeLocked() const;
    // Parses a state file's text; false with `error` set, leaving `out`
    // unusable, if any line is bad.
    static bool parseState(std::string_view text, State& out, std::string& error);
    void saveIfChangedLocked() noexcept;

    SimConfig config_;
    mutable std::mutex mu_;
    std::map<FileKey, File> files_;
    std::map<uint32_t, Context> contexts_; // by instance number
    uint32_t nextInstance_ = 1;
    size_t sweepAt_;
    std::map<std::string, std::set<uid_t>> grants_;
    std::string persistPath_; // empty: no persistence
    std::string savedState_;  // what the file holds
    std::string loadError_;
    std::string saveError_;
};

} // namespace svad::sim
