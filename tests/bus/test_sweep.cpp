// A bad-input sweep of the whole API, on a system-type bus under svad's
// shipped policy. Every Manager method gets wrong types, missing and extra
// arguments, empty and 1 MB strings, strings with newlines, %n and path
// separators, 10,000-entry arrays and dictionaries with duplicates, variants
// of the wrong type and unknown keys, object paths that do not exist or are
// of another kind; every object kind's properties are read, read under wrong
// names and written. Then someone else's context, a double release and PASID
// exhaustion. Each call must be answered (no timeout) with success or a named
// error, and an error's message is bounded. Over 1,000 rounds svad stays on
// the bus with its fd count and RSS flat and its log bounded per refused call;
// the same sweep runs from an unprivileged uid (nobody).
#include "fixture.h"
#include "svad/dbus/sdbus_compat.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <grp.h>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace svad::test {
namespace {

constexpr const char* kRoot = "/org/svad/Svad1";
constexpr const char* kManager = "org.svad.Svad1.Manager";
constexpr const char* kProps = "org.freedesktop.DBus.Properties";
constexpr size_t kMaxErrorMessage = 8192;
constexpr uid_t kNobody = 65534;

using Arg = std::function<void(sdbus::MethodCall&)>;
using Dict = std::map<std::string, sdbus::Variant>;

struct Call {
    std::string label;
    std::string path;
    std::string interface;
    std::string member;
    std::vector<Arg> args;
};

Arg str(std::string s) {
    return [s = std::move(s)](sdbus::MethodCall& m) { m << s; };
}
Arg u32(uint32_t v) {
    return [v](sdbus::MethodCall& m) { m << v; };
}
Arg u64(uint64_t v) {
    return [v](sdbus::MethodCall& m) { m << v; };
}
Arg path(std::string p) {
    return [p = std::move(p)](sdbus::MethodCall& m) { m << sdbus::ObjectPath(p); };
}
Arg strings(std::vector<std::string> v) {
    return [v = std::move(v)](sdbus::MethodCall& m) { m << v; };
}
Arg dict(Dict d) {
    return [d = std::move(d)](sdbus::MethodCall& m) { m << d; };
}
Arg variant(sdbus::Variant v) {
    return [v = std::move(v)](sdbus::MethodCall& m) { m << v; };
}

// Strings a caller may send: the bus refuses invalid UTF-8 itself.
std::vector<std::string> oddStrings(bool heavy) {
    std::vector<std::string> out = {"",
                                    "a\nb\r\nc",
                                    "%n%n%s%x",
                                    "../../etc/passwd",
                                    "/dev/vfio/0",
                                    "0000:3b:10.0\n0000:3b:10.1",
                                    std::string(300, 'x') + "\u00e9\u2026"};
    if (heavy) {
        out.push_back(std::string(size_t{1} << 20, 'A'));
    }
    return out;
}

std::vector<std::string> manyStrings(size_t n, bool duplicates) {
    std::vector<std::string> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        v.push_back(duplicates ? std::string("0000:3b:10.0") : "dev" + std::to_string(i));
    }
    return v;
}

Dict manyKeys(size_t n) {
    Dict d;
    for (size_t i = 0; i < n; ++i) {
        d["key" + std::to_string(i)] = sdbus::Variant(uint32_t(i));
    }
    return d;
}

// The calls of one round. `heavy` adds the 1 MB strings and 10,000 entries.
std::vector<Call> sweepCalls(bool heavy) {
    std::vector<Call> out;
    auto add = [&out](std::string label, std::string member, std::vector<Arg> args) {
        out.push_back(Call{std::move(label), kRoot, kManager, std::move(member), std::move(args)});
    };
    const std::vector<std::string> paths = {"/",
                                            "/org/svad/Svad1/context/99",
                                            "/org/svad/Svad1/context/0",
                                            "/org/svad/Svad1/context/18446744073709551616",
                                            "/org/svad/Svad1/device/0000_3b_00_0",
                                            "/org/svad/Svad1/group/1",
                                            "/org/svad/Svad1"};
    const Dict wrongTypes = {{"mode", sdbus::Variant(uint32_t{1})},
                             {"fault_queue", sdbus::Variant(std::string("yes"))},
                             {"owner_pid", sdbus::Variant(std::string("1"))}};
    const Dict badValues = {{"mode", sdbus::Variant(std::string("both"))},
                            {"owner_pid", sdbus::Variant(uint32_t{0})}};
    const Dict filterWrong = {{"vendor", sdbus::Variant(std::string("x"))},
                              {"kind", sdbus::Variant(uint32_t{99})},
                              {"colour", sdbus::Variant(true)}};

    // Missing arguments, and one too many, for every method.
    const std::map<std::string, std::vector<Arg>> good = {
        {"ListDevices", {dict({})}},
        {"ListObjects", {str(""), u32(0)}},
        {"ListObjectsWithProperties", {str(""), u32(0), strings({"Address"})}},
        {"AllocateContext", {str("sweep"), strings({"0000:ff:00.0"}), dict({})}},
        {"ReleaseContext", {path("/org/svad/Svad1/context/99")}},
        {"AllocatePasid", {path("/org/svad/Svad1/context/99"), str("wq0.0"), dict({})}},
        {"ReleasePasid", {path("/org/svad/Svad1/context/99"), u32(1)}},
        {"SetVirtualId", {path("/org/svad/Svad1/context/99"), str("wq0.0"), u64(1)}},
        {"ReserveDevices", {str("sweep"), strings({"0000:ff:00.0"}), dict({})}},
        {"SetVmOwner", {str("sweep-none"), u32(1)}},
        {"ReleaseVm", {str("sweep-none")}},
        {"Rescan", {}},
        {"Reload", {}},
        {"NoSuchMethod", {}}};
    for (const auto& [member, args] : good) {
        for (size_t n = 0; n < args.size(); ++n) {
            add(member + " with " + std::to_string(n) + " arguments", member,
                std::vector<Arg>(args.begin(), args.begin() + static_cast<long>(n)));
        }
        auto extra = args;
        extra.push_back(str("extra"));
        add(member + " with an extra argument", member, extra);
        // Each argument replaced by one of another type.
        for (size_t i = 0; i < args.size(); ++i) {
            auto wrong = args;
            wrong[i] = (i % 2 == 0) ? u64(7) : variant(sdbus::Variant(std::string("v")));
            add(member + " with argument " + std::to_string(i) + " of a wrong type", member, wrong);
        }
    }
    // Odd strings wherever a string goes.
    for (const auto& s : oddStrings(heavy)) {
        const std::string tag = s.size() > 64 ? std::to_string(s.size()) + " bytes" : "'" + s + "'";
        add("AllocateContext vm " + tag, "AllocateContext", {str(s), strings({"wq0.0"}), dict({})});
        add("AllocateContext device " + tag, "AllocateContext",
            {str("sweep"), strings({s}), dict({})});
        add("ReserveDevices vm " + tag, "ReserveDevices", {str(s), strings({"wq0.0"}), dict({})});
        add("ListObjects start " + tag, "ListObjects", {str(s), u32(3)});
        add("ListObjectsWithProperties name " + tag, "ListObjectsWithProperties",
            {str(""), u32(3), strings({s})});
        add("AllocatePasid device " + tag, "AllocatePasid",
            {path("/org/svad/Svad1/context/99"), str(s), dict({})});
        add("SetVmOwner " + tag, "SetVmOwner", {str(s), u32(1)});
        add("ReleaseVm " + tag, "ReleaseVm", {str(s)});
        add("ListDevices filter key " + tag, "ListDevices", {dict({{s, sdbus::Variant(true)}})});
        add("AllocateContext option key " + tag, "AllocateContext",
            {str("sweep"), strings({"wq0.0"}), dict({{s, sdbus::Variant(true)}})});
    }
    for (const auto& p : paths) {
        add("ReleaseContext " + p, "ReleaseContext", {path(p)});
        add("AllocatePasid on " + p, "AllocatePasid", {path(p), str("wq0.0"), dict({})});
        add("ReleasePasid on " + p, "ReleasePasid", {path(p), u32(0xffffffffU)});
        add("SetVirtualId on " + p, "SetVirtualId", {path(p), str("wq0.0"), u64(UINT64_MAX)});
    }
    add("AllocateContext options of wrong types", "AllocateContext",
        {str("sweep"), strings({"wq0.0"}), dict(wrongTypes)});
    add("AllocateContext options of bad values", "AllocateContext",
        {str("sweep"), strings({"wq0.0"}), dict(badValues)});
    add("ReserveDevices options of wrong types", "ReserveDevices",
        {str("sweep"), strings({"wq0.0"}), dict(wrongTypes)});
    add("ListDevices filter of wrong types", "ListDevices", {dict(filterWrong)});
    add("SetVmOwner pid 0", "SetVmOwner", {str("sweep"), u32(0)});
    add("SetVmOwner pid max", "SetVmOwner", {str("sweep"), u32(0xffffffffU)});
    add("ListObjects limit max", "ListObjects", {str(""), u32(0xffffffffU)});
    add("ListObjectsWithProperties duplicate names", "ListObjectsWithProperties",
        {str(""), u32(3), strings(manyStrings(100, true))});
    if (heavy) {
        add("AllocateContext 10,000 devices", "AllocateContext",
            {str("sweep"), strings(manyStrings(10000, false)), dict({})});
        add("AllocateContext 10,000 duplicates", "AllocateContext",
            {str("sweep"), strings(manyStrings(10000, true)), dict({})});
        add("ListObjectsWithProperties 10,000 names", "ListObjectsWithProperties",
            {str(""), u32(3), strings(manyStrings(10000, false))});
        add("ReserveDevices 10,000 devices", "ReserveDevices",
            {str("sweep"), strings(manyStrings(10000, false)), dict({})});
        add("AllocateContext 10,000 options", "AllocateContext",
            {str("sweep"), strings({"wq0.0"}), dict(manyKeys(10000))});
        add("ListDevices 10,000 filter keys", "ListDevices", {dict(manyKeys(10000))});
    }
    // Properties of every kind of object: read, read under wrong names, written.
    const std::vector<std::pair<std::string, std::string>> objects = {
        {kRoot, kManager},
        {"/org/svad/Svad1/device/0000_3b_00_0", "org.svad.Svad1.Device"},
        {"/org/svad/Svad1/group/1", "org.svad.Svad1.Group"},
        {"/org/svad/Svad1/unit/dmar0", "org.svad.Svad1.Unit"},
        {"/org/svad/Svad1/queue/wq0_2e0", "org.svad.Svad1.Queue"}};
    for (const auto& [p, iface] : objects) {
        auto prop = [&out, p = p](std::string label, std::string member, std::vector<Arg> args) {
            out.push_back(Call{std::move(label), p, kProps, std::move(member), std::move(args)});
        };
        prop("GetAll " + p, "GetAll", {str(iface)});
        prop("GetAll unknown interface on " + p, "GetAll", {str("org.svad.Svad1.Nothing")});
        prop("Get unknown property on " + p, "Get", {str(iface), str("NoSuchProperty")});
        prop("Get with another kind's interface on " + p, "Get",
             {str("org.svad.Svad1.Context"), str("Vm")});
        prop("Set on " + p, "Set", {str(iface), str("Warnings"), variant(sdbus::Variant(true))});
        prop("Get without arguments on " + p, "Get", {});
    }
    return out;
}

struct Outcome {
    std::string error; // "" for success
    size_t messageSize = 0;
};

Outcome send(sdbus::IConnection& conn, const Call& c) {
    auto proxy = svad::dbus::compat::makeProxy(conn, "org.svad.Svad1", c.path);
    auto m = proxy->createMethodCall(c.interface, c.member);
    for (const auto& a : c.args) {
        a(m);
    }
    try {
        (void)proxy->callMethod(m, 10'000'000); // 10 s: an answer, not a hang
    } catch (const sdbus::Error& e) {
        return {e.getName(), e.getMessage().size()};
    }
    return {};
}

// A named error a caller can act on, or success.
bool named(const std::string& error) {
    static const std::set<std::string> freedesktop = {
        "org.freedesktop.DBus.Error.InvalidArgs",      "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.UnknownInterface", "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.PropertyReadOnly", "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.LimitsExceeded"};
    return error.empty() || error.rfind("org.svad.Svad1.Error.", 0) == 0 ||
           freedesktop.count(error) != 0;
}

// Runs `rounds` rounds (every 50th heavy); the first bad answer, or "".
std::string sweep(sdbus::IConnection& conn, int rounds, size_t& calls, size_t& refused) {
    const auto light = sweepCalls(false);
    const auto heavy = sweepCalls(true);
    for (int r = 0; r < rounds; ++r) {
        for (const auto& c : (r % 50 == 0 ? heavy : light)) {
            const Outcome o = send(conn, c);
            ++calls;
            if (!o.error.empty()) {
                ++refused;
            }
            if (!named(o.error)) {
                return c.label + ": answered " + o.error;
            }
            if (o.messageSize > kMaxErrorMessage) {
                return c.label + ": an error message of " + std::to_string(o.messageSize) +
                       " bytes";
            }
        }
    }
    return "";
}

uintmax_t logSize(SvadFixture& f) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(f.root() + "/svad.log", ec);
    return ec ? 0 : n;
}

std::string writeConfig(const TempDir& dir) {
    const std::string path = dir.path() + "/svad.yaml";
    std::ofstream(path) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\ndefault_policy: allow\n";
    return path;
}

TEST(Sweep, EveryMethodAndPropertyAnswersBadInputWithANamedErrorForAThousandRounds) {
    TempDir conf;
    SvadFixture f(testHost(), {"--config", writeConfig(conf)}, {}, systemBusConfig(conf, true));
    const pid_t svad = f.svad().pid();
    size_t calls = 0;
    size_t refused = 0;
    // A first stretch, then the figures, then the rest: what grows with the
    // rounds shows between the two.
    std::string bad = sweep(f.client(), 100, calls, refused);
    ASSERT_EQ(bad, "") << f.svad().log().substr(0, 4096);
    const int fds = fdCount(svad);
    const long rss = rssKiB(svad);
    const uintmax_t log = logSize(f);
    const size_t refusedBefore = refused;
    const auto start = std::chrono::steady_clock::now();
    bad = sweep(f.client(), 900, calls, refused);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(bad, "");
    ASSERT_TRUE(f.svad().running()) << f.svad().log().substr(0, 4096);
    const int fdsEnd = fdCount(svad);
    const long rssEnd = rssKiB(svad);
    const double logPerRefusal =
        static_cast<double>(logSize(f) - log) / static_cast<double>(refused - refusedBefore);
    std::cout << "[ measured ] sweep: " << calls << " calls (" << refused << " refused) in 1,000 "
              << "rounds, the last 900 in " << secs << " s; svad fds " << fds << " -> " << fdsEnd
              << ", RSS " << rss << " -> " << rssEnd << " KiB, log " << logPerRefusal
              << " bytes per refused call" << std::endl;
    EXPECT_EQ(fdsEnd, fds);
    EXPECT_LT(rssEnd, rss + rss / 5 + 2048);
    // svad logs a refused allocation, once and short; most refusals log nothing.
    EXPECT_LT(logPerRefusal, 512.0);
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 0U);
}

TEST(Sweep, SomeoneElsesContextADoubleReleaseAndPasidExhaustion) {
    TempDir conf;
    SvadFixture f(testHost(), {"--config", writeConfig(conf)}, {}, systemBusConfig(conf, true));
    auto manager = f.proxy(kRoot);
    auto a = allocateContext(*manager, "sweep-vm", {"wq0.0"});
    // PASIDs until the VM's quota says no: a named error, never a hang.
    std::string last;
    int got = 0;
    for (int i = 0; i < 2000 && last.empty(); ++i) {
        try {
            uint32_t pasid = 0;
            manager->callMethod("AllocatePasid")
                .onInterface(kManager)
                .withArguments(a.path, std::string("wq0.0"), Dict{})
                .storeResultsTo(pasid);
            ++got;
        } catch (const sdbus::Error& e) {
            last = e.getName();
        }
    }
    EXPECT_EQ(last, "org.svad.Svad1.Error.QuotaExceeded");
    EXPECT_GT(got, 0);
    // Someone else (nobody, no admin group) on the same context: refused, context kept.
    if (::geteuid() == 0) {
        ::chmod(f.root().c_str(), 0755); // the bus socket is in there
        const pid_t child = ::fork();
        if (child == 0) {
            (void)::setgroups(0, nullptr);
            if (::setresgid(kNobody, kNobody, kNobody) != 0 ||
                ::setresuid(kNobody, kNobody, kNobody) != 0) {
                ::_exit(3);
            }
            try {
                auto conn = sdbus::createSessionBusConnectionWithAddress(f.bus());
                Call release{"release", kRoot, kManager, "ReleaseContext", {path(a.path)}};
                // Refused by the bus's policy (AccessDenied) or by svad (PermissionDenied).
                const std::string refusal = send(*conn, release).error;
                if (refusal != "org.freedesktop.DBus.Error.AccessDenied" &&
                    refusal != "org.svad.Svad1.Error.PermissionDenied") {
                    (void)std::fprintf(stderr, "nobody's release: '%s'\n", refusal.c_str());
                    ::_exit(4);
                }
                size_t calls = 0;
                size_t refused = 0;
                const std::string bad = sweep(*conn, 60, calls, refused);
                if (!bad.empty()) {
                    (void)std::fprintf(stderr, "nobody's sweep: %s\n", bad.c_str());
                    ::_exit(5);
                }
                ::_exit(0);
            } catch (const std::exception& e) {
                (void)std::fprintf(stderr, "nobody's sweep: %s\n", e.what());
                ::_exit(6);
            }
        }
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "nobody's sweep: status " << status
            << " (3 cannot drop root, 4 release not refused, 5 an unnamed or unbounded answer, 6 "
               "no bus)";
    }
    EXPECT_EQ(f.property(kRoot, kManager, "ContextCount").get<uint32_t>(), 1U);
    // A double release: the second is NotFound.
    manager->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
    std::string second;
    try {
        manager->callMethod("ReleaseContext").onInterface(kManager).withArguments(a.path);
    } catch (const sdbus::Error& e) {
        second = e.getName();
    }
    EXPECT_EQ(second, "org.svad.Svad1.Error.NotFound");
    EXPECT_TRUE(f.svad().running());
}

} // namespace
} // namespace svad::test
