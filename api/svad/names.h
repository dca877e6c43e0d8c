// svad's public D-Bus names: service, object paths, interfaces and errors.
// Clients may include this header; it has no dependencies.
#pragma once

#include <cerrno>
#include <string_view>

namespace svad::names {

inline constexpr std::string_view kService = "org.svad.Svad1";
inline constexpr std::string_view kRootPath = "/org/svad/Svad1";
inline constexpr std::string_view kDevicePrefix = "/org/svad/Svad1/device/";
inline constexpr std::string_view kVdpaPrefix = "/org/svad/Svad1/vdpa/";
inline constexpr std::string_view kGroupPrefix = "/org/svad/Svad1/group/";
inline constexpr std::string_view kUnitPrefix = "/org/svad/Svad1/unit/";
inline constexpr std::string_view kQueuePrefix = "/org/svad/Svad1/queue/";
inline constexpr std::string_view kContextPrefix = "/org/svad/Svad1/context/";

inline constexpr std::string_view kManagerInterface = "org.svad.Svad1.Manager";
inline constexpr std::string_view kDeviceInterface = "org.svad.Svad1.Device";
inline constexpr std::string_view kGroupInterface = "org.svad.Svad1.Group";
inline constexpr std::string_view kUnitInterface = "org.svad.Svad1.Unit";
inline constexpr std::string_view kQueueInterface = "org.svad.Svad1.Queue";
inline constexpr std::string_view kContextInterface = "org.svad.Svad1.Context";

// Errors: one table mapping the error, its errno and its D-Bus name.
enum class Error {
    InvalidArgument,
    NotFound,
    Busy,
    PermissionDenied,
    PolicyDenied,
    QuotaExceeded,
    NotSupported,
    KernelError,
    // A reply would be larger than a bus message may be (GetManagedObjects of a
    // very large host): read the tree in pages with ListObjects instead.
    TooLarge,
};

struct ErrorInfo {
    Error error;
    int errnoValue;
    std::string_view dbusName;
};

inline constexpr ErrorInfo kErrors[] = {
    {Error::InvalidArgument, EINVAL, "org.svad.Svad1.Error.InvalidArgument"},
    {Error::NotFound, ENOENT, "org.svad.Svad1.Error.NotFound"},
    {Error::Busy, EBUSY, "org.svad.Svad1.Error.Busy"},
    {Error::PermissionDenied, EPERM, "org.svad.Svad1.Error.PermissionDenied"},
    {Error::PolicyDenied, EACCES, "org.svad.Svad1.Error.PolicyDenied"},
    {Error::QuotaExceeded, EDQUOT, "org.svad.Svad1.Error.QuotaExceeded"},
    {Error::NotSupported, EOPNOTSUPP, "org.svad.Svad1.Error.NotSupported"},
    {Error::KernelError, EIO, "org.svad.Svad1.Error.KernelError"},
    {Error::TooLarge, EMSGSIZE, "org.svad.Svad1.Error.TooLarge"},
};

constexpr const ErrorInfo& errorInfo(Error e) {
    for (const auto& i : kErrors) {
        if (i.error == e) {
            return i;
        }
    }
    return kErrors[0];
}

// Every errno svad gives a name of its own, and that name. The canonical errno
// of each error (kErrors) is here too; ENOTTY and ENOSYS (the kernel or the
// plugin lacks the call) are NotSupported. Anything else is KernelError.
struct ErrnoMapping {
    int errnoValue;
    Error error;
};

inline constexpr ErrnoMapping kErrnoErrors[] = {
    {EINVAL, Error::InvalidArgument},
    {ENOENT, Error::NotFound},
    {EBUSY, Error::Busy},
    {EPERM, Error::PermissionDenied},
    {EACCES, Error::PolicyDenied},
    {EDQUOT, Error::QuotaExceeded},
    {EOPNOTSUPP, Error::NotSupported},
    {ENOTTY, Error::NotSupported},
    {ENOSYS, Error::NotSupported},
    {EIO, Error::KernelError},
    {EMSGSIZE, Error::TooLarge},
};

// The error an errno (from the kernel or a plugin) maps to: the one table above.
constexpr Error errorFromErrno(int err) {
    for (const auto& m : kErrnoErrors) {
        if (m.errnoValue == err) {
            return m.error;
        }
    }
    return Error::KernelError;
}

} // namespace svad::names
