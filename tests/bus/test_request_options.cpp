// The request methods' a{sv} options, decoded without a bus: each refusal is
// InvalidArgument with the text the caller gets.
#include "svad/dbus/request_options.h"

#include <gtest/gtest.h>
#include <map>
#include <sdbus-c++/sdbus-c++.h>
#include <string>

namespace {

using svad::dbus::decodeAllocateOptions;
using svad::dbus::decodePasidOptions;
using svad::dbus::decodeReserveOptions;
using Options = std::map<std::string, sdbus::Variant>;

// The error a decoder throws, as "name: message"; empty when it throws none.
template <typename F> std::string errorOf(F&& decode) {
    try {
        decode();
    } catch (const sdbus::Error& e) {
        return e.getName() + ": " + e.getMessage();
    }
    return "";
}

const std::string kInvalid = "org.svad.Svad1.Error.InvalidArgument: ";

TEST(RequestOptions, AllocateOptionsFillTheRequest) {
    svad::core::AllocateRequest req;
    decodeAllocateOptions({{"mode", sdbus::Variant(std::string("attached"))},
                           {"fault_queue", sdbus::Variant(true)},
                           {"owner_pid", sdbus::Variant(uint32_t{4242})}},
                          req);
    EXPECT_EQ(req.mode, svad::core::ContextMode::Attached);
    EXPECT_TRUE(req.faultQueue);
    EXPECT_EQ(req.ownerPid, 4242);
    decodeAllocateOptions({{"mode", sdbus::Variant(std::string("later"))}}, req);
    EXPECT_EQ(req.mode, svad::core::ContextMode::Unknown);
}

TEST(RequestOptions, AllocateOptionsRefused) {
    svad::core::AllocateRequest req;
    auto refusal = [&req](const Options& options) {
        return errorOf([&] { decodeAllocateOptions(options, req); });
    };
    EXPECT_EQ(refusal({{"colour", sdbus::Variant(true)}}),
              kInvalid + "unknown option 'colour' (known: mode fault_queue owner_pid)");
    EXPECT_EQ(refusal({{"fault_queue", sdbus::Variant(uint32_t{1})}}),
              kInvalid + "option 'fault_queue' expects type 'b', got 'u'");
    EXPECT_EQ(refusal({{"owner_pid", sdbus::Variant(uint32_t{0})}}),
              kInvalid + "option 'owner_pid' is not a pid");
    EXPECT_EQ(refusal({{"owner_pid", sdbus::Variant(uint32_t{0x80000000})}}),
              kInvalid + "option 'owner_pid' is not a pid");
}

TEST(RequestOptions, PasidOptionsNoneDefined) {
    EXPECT_EQ(errorOf([] { decodePasidOptions({}); }), "");
    EXPECT_EQ(errorOf([] {
                  decodePasidOptions({{"x", sdbus::Variant(true)}});
              }),
              kInvalid + "unknown option 'x' (none are defined yet)");
}

TEST(RequestOptions, ReserveOptionsLookUpTheOwner) {
    auto lookup = [](uint32_t pid) -> svad::core::Outcome<uid_t> {
        if (pid == 7) {
            return static_cast<uid_t>(1000);
        }
        return svad::core::Failure{svad::names::Error::InvalidArgument,
                                   "option 'owner_pid': there is no process " + std::to_string(pid),
                                   {}};
    };
    svad::core::AllocateRequest req;
    decodeReserveOptions({{"owner_pid", sdbus::Variant(uint32_t{7})}}, req, lookup);
    EXPECT_EQ(req.ownerPid, 7);
    EXPECT_EQ(req.ownerUid, 1000U);
    auto refusal = [&req, &lookup](const Options& options) {
        return errorOf([&] { decodeReserveOptions(options, req, lookup); });
    };
    EXPECT_EQ(refusal({{"colour", sdbus::Variant(true)}}),
              kInvalid + "unknown option 'colour' (known: owner_pid)");
    EXPECT_EQ(refusal({{"owner_pid", sdbus::Variant(std::string("7"))}}),
              kInvalid + "option 'owner_pid' expects type 'u', got 's'");
    // The keys in order: the owner is looked up before a later key is refused.
    EXPECT_EQ(refusal({{"owner_pid", sdbus::Variant(uint32_t{8})}, {"zone", sdbus::Variant(true)}}),
              kInvalid + "option 'owner_pid': there is no process 8");
}

} // namespace
