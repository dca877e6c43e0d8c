// svactl's context commands: alloc, exec, release, contexts, pasid.
#include "svad/cli/client.h"
#include "svad/cli/progress.h"
#include "svad/cli/render.h"
#include "svad/core/parse.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace svad::cli {

namespace {

// As a shell says it: the command was not found, or was found but cannot run.
constexpr int kExitNotFound = 127;
constexpr int kExitCannotRun = 126;

const std::string kContextPrefix = std::string(names::kRootPath) + "/context/";

struct AllocArgs {
    std::string vm;
    std::vector<std::string> devices; // normalized, in the order given
    std::string mode;                 // empty: svad's default (handoff)
    bool faultQueue = false;
    std::optional<uint32_t> ownerPid;
    // --wait: how long to keep asking while a device is held elsewhere (Busy).
    std::chrono::milliseconds wait{0};
};

// The longest --wait svactl takes: a day.
constexpr int64_t kMaxWaitSeconds = 86400;

// "--vm NAME" or "--vm=NAME": the value, or nullopt when `a` is not `option`.
std::optional<std::string> optionValue(const std::vector<std::string>& args, size_t& i,
                                       const std::string& option) {
    const std::string& a = args[i];
    if (a == option) {
        if (i + 1 >= args.size()) {
            fail(kExitUsage, option + " needs a value");
        }
        return args[++i];
    }
    if (a.rfind(option + "=", 0) == 0) {
        return a.substr(option.size() + 1);
    }
    return std::nullopt;
}

// alloc takes its devices as arguments, exec as --device options.
AllocArgs parseAllocArgs(const Options& o, bool exec) {
    const std::string& cmd = o.args[0];
    AllocArgs a;
    bool haveVm = false;
    for (size_t i = 1; i < o.args.size(); ++i) {
        const std::string& arg = o.args[i];
        if (auto v = optionValue(o.args, i, "--vm")) {
            a.vm = *v;
            haveVm = true;
        } else if (auto v = optionValue(o.args, i, "--device")) {
            if (!exec) {
                fail(kExitUsage, "alloc takes its devices as arguments, not --device");
            }
            a.devices.push_back(normalizeAddress(*v));
        } else if (auto v = optionValue(o.args, i, "--mode")) {
            if (*v != "handoff" && *v != "attached") {
                fail(kExitUsage, "--mode must be handoff or attached, not '" + *v + "'");
            }
            a.mode = *v;
        } else if (auto v = optionValue(o.args, i, "--owner-pid")) {
            if (exec) {
                fail(kExitUsage, "exec's lease follows COMMAND itself: --owner-pid is for alloc");
            }
            auto pid = core::parseDec(*v);
            if (!pid || *pid <= 0 || *pid > INT32_MAX) {
                fail(kExitUsage, "--owner-pid needs a process ID, not '" + *v + "'");
            }
            a.ownerPid = static_cast<uint32_t>(*pid);
        } else if (auto v = optionValue(o.args, i, "--wait")) {
            auto secs = core::parseDec(*v);
            if (!secs || *secs < 0 || *secs > kMaxWaitSeconds) {
                fail(kExitUsage, "--wait needs seconds from 0 to " +
                                     std::to_string(kMaxWaitSeconds) + ", not '" + *v + "'");
            }
            a.wait = std::chrono::seconds(*secs);
        } else if (arg == "--fault-queue") {
            a.faultQueue = true;
        } else if (arg.size() > 1 && arg[0] == '-') {
            fail(kExitUsage, "unknown option '" + arg + "' for " + cmd + " (try --help)");
        } else if (exec) {
            fail(kExitUsage, "unexpected argument '" + arg + "' for exec");
        } else {
            a.devices.push_back(normalizeAddress(arg));
        }
    }
    if (!haveVm) {
        fail(kExitUsage, cmd + " needs --vm NAME");
    }
    return a;
}

struct Allocation {
    sdbus::ObjectPath context;
    sdbus::UnixFd iommufd;
    std::map<std::string, sdbus::UnixFd> deviceFds;
    std::map<std::string, sdbus::Variant> info;
    sdbus::UnixFd faultQueueFd; // from info["fault_queue_fd"], when there is one
    // From info["queue_nodes"]: a work queue comes as its node's path, not an fd
    // (the kernel binds a queue to the process that opens it).
    std::map<std::string, std::string> queueNodes;
};

Allocation allocate(ManagerProxy& manager, const Options& o, const AllocArgs& a) {
    std::map<std::string, sdbus::Variant> options;
    if (!a.mode.empty()) {
        options["mode"] = sdbus::Variant(a.mode);
    }
    if (a.faultQueue) {
        options["fault_queue"] = sdbus::Variant(true);
    }
    if (a.ownerPid) {
        options["owner_pid"] = sdbus::Variant(*a.ownerPid);
    }
    Allocation r;
    // A device held by another context (Busy) is asked for again every kRetry
    // until --wait runs out; any other error ends it at once.
    constexpr std::chrono::milliseconds kRetry(250);
    const auto deadline = std::chrono::steady_clock::now() + a.wait;
    Progress progress("allocating a context for vm '" + a.vm + "'",
                      Progress::terminal() && !o.json);
    for (;;) {
        try {
            std::tie(r.context, r.iommufd, r.deviceFds, r.info) =
                manager.AllocateContext(a.vm, a.devices, options);
            break;
        } catch (const sdbus::Error& e) {
            const bool busy = e.getName() == names::errorInfo(names::Error::Busy).dbusName;
            if (!busy || std::chrono::steady_clock::now() + kRetry > deadline) {
                failCall(o, "cannot allocate a context for vm '" + a.vm + "'", e);
            }
            progress.set("waiting: " + e.getMessage());
            std::this_thread::sleep_for(kRetry);
        }
    }
    auto fq = r.info.find("fault_queue_fd");
    if (fq != r.info.end() && fq->second.containsValueOfType<sdbus::UnixFd>()) {
        r.faultQueueFd = fq->second.get<sdbus::UnixFd>();
    }
    auto qn = r.info.find("queue_nodes");
    if (qn != r.info.end() &&
        qn->second.containsValueOfType<std::map<std::string, std::string>>()) {
        r.queueNodes = qn->second.get<std::map<std::string, std::string>>();
    }
    return r;
}

// The devices of an allocation in the order they were asked for, then any other.
std::vector<std::string> deviceOrder(const AllocArgs& a, const Allocation& r) {
    std::vector<std::string> order;
    for (const auto& d : a.devices) {
        if (r.deviceFds.count(d) != 0 && std::find(order.begin(), order.end(), d) == order.end()) {
            order.push_back(d);
        }
    }
    for (const auto& [d, fd] : r.deviceFds) {
        if (std::find(order.begin(), order.end(), d) == order.end()) {
            order.push_back(d);
        }
    }
    return order;
}

int runAlloc(const Options& o) {
    AllocArgs a = parseAllocArgs(o, false);
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    Allocation r = allocate(manager, o, a);
    const auto order = deviceOrder(a, r);
    const uint32_t owner = a.ownerPid ? *a.ownerPid : static_cast<uint32_t>(::getpid());

    if (o.json) {
        auto fdJson = [](int fd) {
            return "{\"fd\":" + std::to_string(fd) + ",\"target\":" + jsonString(fdTarget(fd)) +
                   "}";
        };
        std::string out = "{\"context\":" + jsonString(r.context) +
                          ",\"owner_pid\":" + std::to_string(owner) +
                          ",\"iommufd\":" + fdJson(r.iommufd.get()) + ",\"device_fds\":{";
        for (size_t i = 0; i < order.size(); ++i) {
            out += (i > 0 ? "," : "") + jsonString(order[i]) + ":" +
                   fdJson(r.deviceFds.at(order[i]).get());
        }
        out += "},\"info\":{";
        bool first = true;
        for (const auto& [k, v] : r.info) {
            out += (first ? "" : ",") + jsonString(k) + ":" +
                   (k == "fault_queue_fd" && r.faultQueueFd.isValid() ? fdJson(r.faultQueueFd.get())
                                                                      : renderValue(k, v, true));
            first = false;
        }
        std::printf("%s}}\n", out.c_str());
        return 0;
    }

    std::printf("context  %s\n", r.context.c_str());
    if (a.ownerPid) {
        std::printf("owner    pid %u: svad releases the context when that process exits\n", owner);
    } else {
        std::printf("owner    pid %u (this svactl): svad releases the context when svactl exits\n",
                    owner);
    }
    std::vector<std::vector<std::string>> rows = {{"FD", "FOR", "WHAT"}};
    rows.push_back({std::to_string(r.iommufd.get()), "iommufd", fdTarget(r.iommufd.get())});
    for (const auto& d : order) {
        int fd = r.deviceFds.at(d).get();
        rows.push_back({std::to_string(fd), d, fdTarget(fd)});
    }
    for (const auto& [queue, node] : r.queueNodes) {
        rows.push_back({"-", queue, "node " + node + " (the owner's uid may open it)"});
    }
    if (r.faultQueueFd.isValid()) {
        rows.push_back(
            {std::to_string(r.faultQueueFd.get()), "fault queue", fdTarget(r.faultQueueFd.get())});
    }
    (void)std::fputs(renderTable(rows).c_str(), stdout);
    if (!r.info.empty()) {
        std::printf("info\n");
        size_t width = 0;
        for (const auto& [k, v] : r.info) {
            width = std::max(width, k.size());
        }
        for (const auto& [k, v] : r.info) {
            std::string text = k == "fault_queue_fd" && r.faultQueueFd.isValid()
                                   ? "fd " + std::to_string(r.faultQueueFd.get())
                                   : renderValue(k, v, false);
            std::printf("  %s:%s%s\n", k.c_str(), std::string(width - k.size() + 1, ' ').c_str(),
                        text.empty() ? "-" : text.c_str());
        }
    }
    return 0;
}

// A context as typed: its path, or the number N of /org/svad/Svad1/context/N.
sdbus::ObjectPath contextPath(const std::string& arg) {
    const bool digits =
        !arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos && arg.size() < 20;
    if (digits) {
        return sdbus::ObjectPath(kContextPrefix + arg);
    }
    if (arg.rfind(kContextPrefix, 0) == 0 && arg.size() > kContextPrefix.size() &&
        arg.find_first_not_of("0123456789", kContextPrefix.size()) == std::string::npos) {
        return sdbus::ObjectPath(arg);
    }
    fail(kExitUsage,
         "'" + arg + "' is not a context (its path " + kContextPrefix + "N or its number N)");
}

int runRelease(const Options& o) {
    if (o.args.size() != 2) {
        fail(kExitUsage, "release needs exactly one CONTEXT (a path or a number)");
    }
    const sdbus::ObjectPath path = contextPath(o.args[1]);
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    try {
        manager.ReleaseContext(path);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot release " + path, e);
    }
    if (o.json) {
        std::printf("{\"released\":%s}\n", jsonString(path).c_str());
    } else {
        std::printf("released %s\n", path.c_str());
    }
    return 0;
}

int runContexts(const Options& o) {
    if (o.args.size() != 1) {
        fail(kExitUsage, "unexpected argument '" + o.args[1] + "' for contexts");
    }
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    Objects objects;
    try {
        objects = listObjects(manager, kContextPrefix, false);
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot list the contexts", e);
    }
    (void)std::fputs(renderContexts(objects, o.json).c_str(), stdout);
    return 0;
}

int runPasid(const Options& o) {
    const std::string sub = o.args.size() > 1 ? o.args[1] : "";
    if (sub != "alloc" && sub != "release") {
        fail(kExitUsage, "pasid needs 'alloc CONTEXT DEVICE' or 'release CONTEXT PASID'");
    }
    if (o.args.size() != 4) {
        fail(kExitUsage, sub == "alloc" ? "pasid alloc needs CONTEXT and DEVICE"
                                        : "pasid release needs CONTEXT and PASID");
    }
    const sdbus::ObjectPath path = contextPath(o.args[2]);
    if (sub == "alloc") {
        const std::string device = normalizeAddress(o.args[3]);
        auto connection = connectBus(o.bus);
        ManagerProxy manager(*connection);
        uint32_t pasid = 0;
        try {
            pasid = manager.AllocatePasid(path, device, {});
        } catch (const sdbus::Error& e) {
            failCall(o, "cannot allocate a PASID for " + device + " in " + path, e);
        }
        if (o.json) {
            std::printf("{\"context\":%s,\"device\":%s,\"pasid\":%u}\n", jsonString(path).c_str(),
                        jsonString(device).c_str(), pasid);
        } else {
            std::printf("%u\n", pasid);
        }
        return 0;
    }
    auto pasid = core::parseDec(o.args[3]);
    if (!pasid || *pasid < 0 || *pasid > UINT32_MAX) {
        fail(kExitUsage, "'" + o.args[3] + "' is not a PASID");
    }
    auto connection = connectBus(o.bus);
    ManagerProxy manager(*connection);
    try {
        manager.ReleasePasid(path, static_cast<uint32_t>(*pasid));
    } catch (const sdbus::Error& e) {
        failCall(o, "cannot release PASID " + o.args[3] + " of " + path, e);
    }
    if (o.json) {
        std::printf("{\"context\":%s,\"released\":%u}\n", jsonString(path).c_str(),
                    static_cast<uint32_t>(*pasid));
    } else {
        std::printf("released PASID %u of %s\n", static_cast<uint32_t>(*pasid), path.c_str());
    }
    return 0;
}

// ---- exec -------------------------------------------------------------------

// Calls `each(start, end, name)` for every placeholder of `arg`: {name} where
// name is a lower-case word (iommufd, context, fault_queue, ...), fd:DEVICE or
// path:QUEUE.
// ${var}, {}, {a,b} and {print $1} are not placeholders.
void forEachPlaceholder(const std::string& arg,
                        const std::function<void(size_t, size_t, const std::string&)>& each) {
    size_t i = 0;
    while ((i = arg.find('{', i)) != std::string::npos) {
        size_t close = arg.find('}', i + 1);
        if (close == std::string::npos) {
            return;
        }
        const std::string name = arg.substr(i + 1, close - i - 1);
        bool word =
            !name.empty() && name[0] >= 'a' && name[0] <= 'z' &&
            name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
        const size_t colon = name.rfind("fd:", 0) == 0 ? 3 : name.rfind("path:", 0) == 0 ? 5 : 0;
        bool fd = colon != 0 && name.size() > colon &&
                  name.find_first_of(" \t\n{}$") == std::string::npos;
        if ((word || fd) && (i == 0 || arg[i - 1] != '$')) {
            each(i, close + 1, name);
            i = close + 1;
        } else {
            ++i;
        }
    }
}

// The device a {fd:DEVICE} or {path:QUEUE} names, as --device gave it (6a:01.0 == 0000:6a:01.0).
std::string placeholderDevice(const std::string& name) {
    return normalizeAddress(name.substr(name.find(':') + 1));
}

// "fd:" or "path:", and the device, of a placeholder that names one.
std::string placeholderKey(const std::string& name) {
    return name.substr(0, name.find(':') + 1) + placeholderDevice(name);
}

// A work queue's name (wqX.Y): svad hands it out as its node's path.
bool isQueueName(const std::string& d) {
    const size_t dot = d.find('.');
    auto digits = [&d](size_t from, size_t to) {
        return to > from && d.find_first_not_of("0123456789", from) >= to;
    };
    return d.rfind("wq", 0) == 0 && dot != std::string::npos && digits(2, dot) &&
           digits(dot + 1, d.size());
}

[[noreturn]] void queueHasNoFd(const std::string& queue) {
    fail(kExitUsage, "placeholder {fd:" + queue + "}: " + queue +
                         " is a work queue, which svad hands out as its node's path, not as an "
                         "fd (the kernel binds a queue to the process that opens it): use {path:" +
                         queue + "} and open the node in COMMAND");
}

void checkPlaceholders(const AllocArgs& a, const std::vector<std::string>& command) {
    std::string known = "{iommufd}, {context}";
    known += a.devices.empty() ? "" : ", {fd:DEVICE} or {path:QUEUE} for a --device";
    known += a.faultQueue ? ", {fault_queue}" : "";
    for (const auto& arg : command) {
        forEachPlaceholder(arg, [&](size_t, size_t, const std::string& name) {
            if (name == "iommufd" || name == "context" || (name == "fault_queue" && a.faultQueue)) {
                return;
            }
            if (name == "fault_queue") {
                fail(kExitUsage, "placeholder {fault_queue} needs --fault-queue");
            }
            if (name.rfind("fd:", 0) == 0 || name.rfind("path:", 0) == 0) {
                const std::string dev = placeholderDevice(name);
                const bool fd = name[0] == 'f';
                if (std::find(a.devices.begin(), a.devices.end(), dev) != a.devices.end()) {
                    if (fd && isQueueName(dev)) {
                        queueHasNoFd(dev);
                    }
                    return;
                }
                std::string given;
                for (const auto& d : a.devices) {
                    given += (given.empty() ? "" : ", ") + d;
                }
                fail(kExitUsage, "placeholder {" + name + "}: '" + name.substr(name.find(':') + 1) +
                                     "' is not a --device of this exec" +
                                     (given.empty() ? " (none given)" : " (" + given + ")"));
            }
            fail(kExitUsage,
                 "unknown placeholder {" + name + "} in '" + arg + "' (known: " + known + ")");
        });
    }
}

std::string substitute(const std::string& arg, const std::map<std::string, std::string>& values) {
    std::string out;
    size_t last = 0;
    forEachPlaceholder(arg, [&](size_t start, size_t end, const std::string& name) {
        const std::string key = name.find(':') != std::string::npos ? placeholderKey(name) : name;
        out += arg.substr(last, start - last) + values.at(key);
        last = end;
    });
    return out + arg.substr(last);
}

// Whether execvp would find and run `file`, checked before anything is
// allocated: nullopt, or why not with the exit status a shell would give.
std::optional<std::pair<int, std::string>> cannotRun(const std::string& file) {
    auto check = [](const std::string& path) -> std::optional<std::pair<int, std::string>> {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            return std::make_pair(kExitNotFound, path + ": " + std::strerror(errno));
        }
        if (S_ISDIR(st.st_mode) || ::access(path.c_str(), X_OK) != 0) {
            return std::make_pair(
                kExitCannotRun, path + ": " + std::strerror(S_ISDIR(st.st_mode) ? EISDIR : EACCES));
        }
        return std::nullopt;
    };
    if (file.empty()) {
        return std::make_pair(kExitNotFound, std::string("an empty command"));
    }
    if (file.find('/') != std::string::npos) {
        return check(file);
    }
    const char* env = std::getenv("PATH");
    const std::string path = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
    size_t start = 0;
    while (start <= path.size()) {
        size_t colon = path.find(':', start);
        if (colon == std::string::npos) {
            colon = path.size();
        }
        std::string dir = path.substr(start, colon - start);
        if (!check((dir.empty() ? "." : dir) + "/" + file)) {
            return std::nullopt;
        }
        start = colon + 1;
    }
    return std::make_pair(kExitNotFound, file + ": command not found");
}

void inherit(int fd) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) {
        fail(kExitFailure,
             "exec: cannot pass fd " + std::to_string(fd) + " on: " + std::strerror(errno));
    }
}

int runExec(const Options& o) {
    AllocArgs a = parseAllocArgs(o, true);
    if (o.command.empty()) {
        fail(kExitUsage, "exec needs a COMMAND (svactl exec --vm NAME --device D -- COMMAND ...)");
    }
    checkPlaceholders(a, o.command);
    if (auto why = cannotRun(o.command[0])) {
        fail(why->first, "exec: " + why->second);
    }

    // Allocate; the fds are then this process's to keep, across exec.
    std::map<std::string, std::string> values;
    {
        auto connection = connectBus(o.bus);
        ManagerProxy manager(*connection);
        Allocation r = allocate(manager, o, a);
        values["context"] = r.context;
        values["iommufd"] = std::to_string(r.iommufd.get());
        inherit(r.iommufd.release());
        for (auto& [device, fd] : r.deviceFds) {
            values["fd:" + device] = std::to_string(fd.get());
            inherit(fd.release());
        }
        for (const auto& [queue, node] : r.queueNodes) {
            values["path:" + queue] = node;
        }
        if (r.faultQueueFd.isValid()) {
            values["fault_queue"] = std::to_string(r.faultQueueFd.get());
            inherit(r.faultQueueFd.release());
        } else if (a.faultQueue) {
            fail(kExitFailure,
                 "exec: svad gave no fault queue fd although --fault-queue was given");
        }
        for (const auto& d : a.devices) {
            if (values.count("fd:" + d) == 0 && values.count("path:" + d) == 0) {
                fail(kExitFailure, "exec: svad gave no fd for " + d);
            }
        }
        // Which devices are queues, svad's reply says: each placeholder must fit.
        for (const auto& arg : o.command) {
            forEachPlaceholder(arg, [&values](size_t, size_t, const std::string& name) {
                if (name.find(':') == std::string::npos ||
                    values.count(placeholderKey(name)) != 0) {
                    return;
                }
                const std::string dev = placeholderDevice(name);
                if (name[0] == 'f') {
                    queueHasNoFd(dev);
                }
                std::string why = "placeholder {";
                why += name;
                why += "}: ";
                why += dev;
                why += " is not a work queue, svad hands it out as an fd: use {fd:";
                why += dev;
                why += "}";
                fail(kExitUsage, why);
            });
        }
        // The proxy, then the connection, close here: COMMAND inherits no bus.
    }
    ::setenv("SVAD_CONTEXT", values["context"].c_str(), 1);
    ::setenv("SVAD_IOMMUFD", values["iommufd"].c_str(), 1);

    std::vector<std::string> args;
    args.reserve(o.command.size());
    for (const auto& arg : o.command) {
        args.push_back(substitute(arg, values));
    }
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& arg : args) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    (void)std::fflush(stdout);
    ::execvp(argv[0], argv.data());
    const int err = errno;
    fail(err == ENOENT ? kExitNotFound : kExitCannotRun,
         "exec: cannot run '" + args[0] + "': " + std::strerror(err));
}

} // namespace

bool isContextCommand(const std::string& cmd) {
    return cmd == "alloc" || cmd == "exec" || cmd == "release" || cmd == "contexts" ||
           cmd == "pasid";
}

bool contextOptionTakesValue(const std::string& option) {
    return option == "--vm" || option == "--device" || option == "--mode" ||
           option == "--owner-pid" || option == "--wait";
}

int runContextCommand(const Options& o) {
    const std::string& cmd = o.args[0];
    if (cmd != "exec" && !o.command.empty()) {
        fail(kExitUsage, "unexpected '--' for " + cmd);
    }
    if (cmd == "alloc") {
        return runAlloc(o);
    }
    if (cmd == "release") {
        return runRelease(o);
    }
    if (cmd == "contexts") {
        return runContexts(o);
    }
    if (cmd == "pasid") {
        return runPasid(o);
    }
    return runExec(o);
}

} // namespace svad::cli
