// The one errno -> error -> D-Bus name table (api/svad/names.h).
#include "svad/names.h"

#include <cerrno>
#include <gtest/gtest.h>
#include <set>
#include <string>

namespace {

using svad::names::Error;
using svad::names::errorFromErrno;
using svad::names::errorInfo;

TEST(ErrorTable, EveryErrorHasOneRowAndAnUnsharedName) {
    std::set<int> errors;
    std::set<std::string_view> dbusNames;
    for (const auto& row : svad::names::kErrors) {
        EXPECT_TRUE(errors.insert(static_cast<int>(row.error)).second);
        EXPECT_TRUE(dbusNames.insert(row.dbusName).second) << row.dbusName;
        EXPECT_EQ(row.dbusName.rfind("org.svad.Svad1.Error.", 0), 0U) << row.dbusName;
        EXPECT_EQ(errorInfo(row.error).dbusName, row.dbusName);
        // An error's own errno maps back to it.
        EXPECT_EQ(errorFromErrno(row.errnoValue), row.error) << row.dbusName;
    }
    EXPECT_EQ(errors.size(), static_cast<size_t>(Error::TooLarge) + 1);
}

TEST(ErrorTable, ErrnoRowsAreUnique) {
    std::set<int> seen;
    for (const auto& row : svad::names::kErrnoErrors) {
        EXPECT_TRUE(seen.insert(row.errnoValue).second) << "errno " << row.errnoValue;
    }
}

struct ErrnoCase {
    int err;
    Error expected;
    const char* dbusName;
};

class ErrnoToError : public testing::TestWithParam<ErrnoCase> {};

TEST_P(ErrnoToError, MapsToItsName) {
    const auto& c = GetParam();
    EXPECT_EQ(errorFromErrno(c.err), c.expected);
    EXPECT_EQ(errorInfo(errorFromErrno(c.err)).dbusName, c.dbusName);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ErrnoToError,
    testing::Values(
        ErrnoCase{EINVAL, Error::InvalidArgument, "org.svad.Svad1.Error.InvalidArgument"},
        ErrnoCase{ENOENT, Error::NotFound, "org.svad.Svad1.Error.NotFound"},
        ErrnoCase{EBUSY, Error::Busy, "org.svad.Svad1.Error.Busy"},
        ErrnoCase{EPERM, Error::PermissionDenied, "org.svad.Svad1.Error.PermissionDenied"},
        ErrnoCase{EACCES, Error::PolicyDenied, "org.svad.Svad1.Error.PolicyDenied"},
        ErrnoCase{EDQUOT, Error::QuotaExceeded, "org.svad.Svad1.Error.QuotaExceeded"},
        ErrnoCase{EOPNOTSUPP, Error::NotSupported, "org.svad.Svad1.Error.NotSupported"},
        // The kernel or a plugin lacks the call.
        ErrnoCase{ENOTTY, Error::NotSupported, "org.svad.Svad1.Error.NotSupported"},
        ErrnoCase{ENOSYS, Error::NotSupported, "org.svad.Svad1.Error.NotSupported"},
        ErrnoCase{EIO, Error::KernelError, "org.svad.Svad1.Error.KernelError"},
        // Anything else is a kernel error.
        ErrnoCase{ENOMEM, Error::KernelError, "org.svad.Svad1.Error.KernelError"},
        ErrnoCase{EBADF, Error::KernelError, "org.svad.Svad1.Error.KernelError"},
        ErrnoCase{0, Error::KernelError, "org.svad.Svad1.Error.KernelError"}));

} // namespace
