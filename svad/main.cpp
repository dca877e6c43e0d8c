// svad: wiring only. Parses the command line, discovers the host, connects
// to the bus, publishes the objects and runs the loop.
#include "svad/core/config.h"
#include "svad/core/discovery.h"
#include "svad/core/engine.h"
#include "svad/core/log.h"
#include "svad/core/parse.h"
#include "svad/core/pasid_allocator.h"
#include "svad/dbus/bus_loop.h"
#include "svad/dbus/connect.h"
#include "svad/dbus/hotplug.h"
#include "svad/dbus/sdbus_compat.h"
#include "svad/dbus/service.h"
#include "svad/dbus/service_manager.h"
#include "svad/dbus/thread_pool_names.h"
#include "svad/linux/config_file.h"
#include "svad/linux/driver_binder_linux.h"
#include "svad/linux/fd_store.h"
#include "svad/linux/journal_sink.h"
#include "svad/linux/kernel_linux.h"
#include "svad/linux/proc.h"
#include "svad/linux/state_sqlite.h"
#include "svad/linux/sysfs_reader.h"
#include "svad/linux/udev_monitor.h"
#include "svad/metrics/metrics.h"
#include "svad/names.h"
#include "svad/plugin_host/plugin_host.h"
#include "svad/ports/state_store_locked.h"
#include "svad/sim/crash_points.h"
#include "svad/sim/driver_binder_sim.h"
#include "svad/sim/kernel_sim.h"
#include "svad/version.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <sdbus-c++/sdbus-c++.h>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

namespace {

// Every context holds fds: its iommufd, its devices', a pidfd of its owner. The
// soft limit of open files (1024 under systemd) goes up to the hard one; svad
// waits with epoll, never select, so a high number is no harm.
void raiseFileLimit() {
    struct rlimit lim {};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) {
        return;
    }
    const rlim_t was = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        svad::log::warning(std::string("cannot raise the limit of open files: ") +
                           std::strerror(errno));
        return;
    }
    svad::log::debug("limit of open files raised",
                     {{"FROM", std::to_string(was)}, {"TO", std::to_string(lim.rlim_cur)}});
}

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

struct Options {
    std::string bus = "system";
    // Unset: the configuration's value, else the default.
    std::optional<std::string> sysfsRoot;
    std::optional<std::string> devRoot;
    std::optional<std::string> stateDir; // "off": none
    std::optional<std::string> backend;
    std::optional<std::string> config;
    std::optional<std::string> checkConfig;
    bool verbose = false;
    std::optional<std::string> metricsAddress; // unset: the configuration's
    svad::linux_impl::LogTarget logTarget = svad::linux_impl::LogTarget::Auto;
    std::chrono::milliseconds hotplugSettle = svad::dbus::Hotplug::kDefaultSettle;
};

void printHelp() {
    std::printf("Usage: svad [OPTIONS]\n"
                "The Shared Virtual Addressing control plane: publishes the host's IOMMU\n"
                "topology on D-Bus as %s.\n\n"
                "  --bus session|system|ADDRESS  bus to serve on (default: system; sd-bus\n"
                "                                honours DBUS_SYSTEM_BUS_ADDRESS)\n"
                "  --sysfs-root DIR              sysfs to read (default: /sys)\n"
                "  --dev-root DIR                device nodes (default: /dev)\n"
                "  --backend linux|sim           kernel backend (default: linux)\n"
                "  --state-dir DIR|off           where contexts are recorded across restarts\n"
                "                                (default: state_dir, else /var/lib/svad for\n"
                "                                the linux backend, off for the sim)\n"
                "  --config FILE                 configuration file (default: %s if it\n"
                "                                exists, else built-in defaults: deny all)\n"
                "  --check-config FILE           validate a configuration file and exit\n"
                "  --metrics-address ADDR|off    serve Prometheus metrics on IPV4:PORT or\n"
                "                                [IPV6]:PORT\n"
                "                                (default: metrics.address, else 127.0.0.1:9464)\n"
                "  --log-target auto|journal|stderr  where logs go (default: auto, the\n"
                "                                journal when stderr is journald's stream)\n"
                "  --hotplug-settle MS           handle hotplug events together that come\n"
                "                                within MS of each other; the first after a\n"
                "                                quiet spell at once (default: 50)\n"
                "  --verbose                     log debug messages\n"
                "  --version                     print the version and exit\n"
                "  --help                        print this help and exit\n\n"
                "Command-line roots and backend override the configuration's.\n"
                "Signals: SIGHUP reloads the configuration and rescans the host;\n"
                "SIGTERM and SIGINT stop svad.\n",
                std::string(svad::names::kService).c_str(), SVAD_CONFIG_FILE);
}

[[noreturn]] void usageError(const std::string& message) {
    (void)std::fprintf(stderr, "svad: %s (try --help)\n", message.c_str());
    std::exit(kExitUsage);
}

Options parseArgs(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string value;
        bool hasInline = false;
        if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            hasInline = true;
        }
        auto next = [&]() -> std::string {
            if (hasInline) {
                return value;
            }
            if (i + 1 >= argc) {
                usageError("option " + arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            printHelp();
            std::exit(0);
        } else if (arg == "--version") {
            std::printf("svad %s\n", SVAD_VERSION);
            std::exit(0);
        } else if (arg == "--bus") {
            o.bus = next();
        } else if (arg == "--sysfs-root") {
            o.sysfsRoot = next();
        } else if (arg == "--dev-root") {
            o.devRoot = next();
        } else if (arg == "--state-dir") {
            o.stateDir = next();
            if (*o.stateDir != "off" && o.stateDir->front() != '/') {
                usageError("--state-dir must be an absolute path or 'off', not '" + *o.stateDir +
                           "'");
            }
        } else if (arg == "--backend") {
            o.backend = next();
            if (*o.backend != "linux" && *o.backend != "sim") {
                usageError("--backend must be 'linux' or 'sim', not '" + *o.backend + "'");
            }
        } else if (arg == "--config") {
            o.config = next();
        } else if (arg == "--check-config") {
            o.checkConfig = next();
        } else if (arg == "--metrics-address") {
            o.metricsAddress = next();
            if (*o.metricsAddress != "off") {
                if (auto err = svad::metrics::unservable(*o.metricsAddress)) {
                    usageError("--metrics-address: " + *err);
                }
            }
        } else if (arg == "--log-target") {
            const std::string target = next();
            auto t = svad::linux_impl::parseLogTarget(target);
            if (!t) {
                usageError("--log-target must be 'auto', 'journal' or 'stderr', not '" + target +
                           "'");
            }
            o.logTarget = *t;
        } else if (arg == "--hotplug-settle") {
            const std::string ms = next();
            auto v = svad::core::parseDec(ms);
            if (!v || *v < 0 || *v > 60000 ||
                ms.find_first_not_of("0123456789") != std::string::npos) {
                usageError("--hotplug-settle must be 0 to 60000 (milliseconds), not '" + ms + "'");
            }
            o.hotplugSettle = std::chrono::milliseconds(*v);
        } else if (arg == "--verbose" || arg == "-v") {
            o.verbose = true;
        } else {
            usageError("unknown argument '" + arg + "'");
        }
    }
    if (o.bus.empty()) {
        usageError("--bus must not be empty");
    }
    return o;
}

bool isDirectory(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::shared_ptr<const svad::core::Config> loadOrExit(const std::string& path) {
    auto load = svad::linux_impl::loadConfig(path, SVAD_PLUGIN_DIR);
    if (!load.errors.empty()) {
        for (const auto& e : load.errors) {
            (void)std::fprintf(stderr, "svad: configuration: %s\n", e.c_str());
        }
        std::exit(kExitUsage);
    }
    return load.config;
}

} // namespace

int main(int argc, char** argv) {
    Options opts = parseArgs(argc, argv);
    if (opts.verbose) {
        svad::log::setMaxPriority(svad::log::Priority::Debug);
    }
    if (svad::linux_impl::useJournal(opts.logTarget)) {
        svad::log::setSink(svad::linux_impl::journalSink());
    }
    if (opts.checkConfig) {
        auto config = loadOrExit(*opts.checkConfig);
        // What the configuration check passes, svad can serve (the start asks the same).
        if (auto err = svad::metrics::unservable(config->metricsAddress)) {
            (void)std::fprintf(stderr, "svad: configuration: %s: metrics.address: %s\n",
                               opts.checkConfig->c_str(), err->c_str());
            return kExitUsage;
        }
        // The plugins' sections too: each plugin is loaded as svad would load it and
        // asked whether it takes its settings (it touches no device for that).
        svad::sim::KernelSim noKernel{svad::sim::SimConfig{}};
        svad::linux_impl::DriverBinderLinux noBinder("/nonexistent");
        svad::plugin_host::PluginHost plugins(noKernel, noBinder);
        plugins.loadDirectory(config->pluginDir);
        auto errors = plugins.configure(*config);
        for (const auto& e : errors) {
            (void)std::fprintf(stderr, "svad: configuration: %s: %s\n", opts.checkConfig->c_str(),
                               e.c_str());
        }
        if (!errors.empty()) {
            return kExitUsage;
        }
        std::printf("%s: valid (%zu rules, default policy %s, %zu plugins from %s)\n",
                    opts.checkConfig->c_str(), config->rules.size(),
                    config->defaultPolicy == svad::core::RuleAction::Allow ? "allow" : "deny",
                    plugins.plugins().size(), config->pluginDir.c_str());
        return 0;
    }
    // The configuration: the named file, else the installed one when present.
    std::optional<std::string> configPath = opts.config;
    if (!configPath && ::access(SVAD_CONFIG_FILE, F_OK) == 0) {
        configPath = SVAD_CONFIG_FILE;
    }
    std::shared_ptr<const svad::core::Config> config =
        configPath ? loadOrExit(*configPath) : svad::core::defaultConfig(SVAD_PLUGIN_DIR);
    opts.sysfsRoot = opts.sysfsRoot.value_or(config->sysfsRoot.value_or("/sys"));
    opts.devRoot = opts.devRoot.value_or(config->devRoot.value_or("/dev"));
    opts.backend = opts.backend.value_or(config->backend.value_or("linux"));
    opts.stateDir = opts.stateDir.value_or(
        config->stateDir.value_or(*opts.backend == "linux" ? "/var/lib/svad" : "off"));
    if (!isDirectory(*opts.sysfsRoot)) {
        usageError("sysfs root " + *opts.sysfsRoot + " is not a directory");
    }
    if (!isDirectory(*opts.devRoot)) {
        usageError("dev root " + *opts.devRoot + " is not a directory");
    }
    const std::string backend = *opts.backend;
    const std::string devRootDir = *opts.devRoot;
    // Writing to a client that went away must not kill the daemon.
    (void)std::signal(SIGPIPE, SIG_IGN);

    const std::string sysfsRoot = *opts.sysfsRoot;
    // Sysfs reads are syscall-bound: one reader per core, up to four.
    const unsigned readers = std::clamp(std::thread::hardware_concurrency(), 1U, 4U);
    auto scan = [sysfsRoot, readers] {
        return svad::core::discover(
            [&sysfsRoot] { return std::make_unique<svad::linux_impl::SysfsReader>(sysfsRoot); },
            readers);
    };

    try {
        boost::asio::io_context io(1);
        // Block the signals before the scan, so none is lost while we start.
        boost::asio::signal_set stopSignals(io, SIGTERM, SIGINT);
        boost::asio::signal_set hupSignal(io, SIGHUP);

        using Clock = std::chrono::steady_clock;
        auto msSince = [](Clock::time_point t) {
            return std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
        };
        raiseFileLimit();
        // The hotplug monitor listens before the scan: an event that comes while the
        // host is read waits in its socket, and none falls between the scan and the
        // start of hotplug (a later event names only its own function). Without one
        // svad still serves (SIGHUP rescans).
        std::unique_ptr<svad::linux_impl::UdevMonitor> udev;
        try {
            udev = std::make_unique<svad::linux_impl::UdevMonitor>(io);
        } catch (const svad::linux_impl::UdevError& e) {
            svad::log::warning(std::string("hotplug disabled: ") + e.what());
        }
        auto t0 = Clock::now();
        svad::core::Host host = scan();
        svad::log::debug("initial scan done", {{"MS", msSince(t0)}});

        std::unique_ptr<svad::ports::Kernel> kernel;
        std::unique_ptr<svad::ports::DriverBinder> binder;
        svad::dbus::ServiceManager manager(io);
        svad::sim::KernelSim* sim = nullptr;
        // The sim's crash points (svad/sim/crash_points.h), and what they wrap.
        std::unique_ptr<svad::sim::CrashPoints> crash;
        std::unique_ptr<svad::ports::Kernel> simKernel;
        std::unique_ptr<svad::ports::DriverBinder> simBinder;
        // The PASID width a function gets when the sim binds it to vfio-pci.
        std::function<const svad::core::Host&()> currentHost;
        if (backend == "sim") {
            auto simConfig = svad::sim::SimConfig::fromHost(host, devRootDir);
            simConfig.nodeAcls = true; // the queues' node files of the host tree get the grants
            auto owned = std::make_unique<svad::sim::KernelSim>(std::move(simConfig));
            sim = owned.get();
            if (*opts.stateDir != "off") {
                // The simulated kernel outlives svad as a real one does: its objects
                // are there for the fds a restart gets back.
                std::error_code ec;
                std::filesystem::create_directories(sysfsRoot + "/.sim", ec);
                if (!sim->persistIn(sysfsRoot + "/.sim/kernel-state")) {
                    svad::log::warning("sim: the kernel state of the last run was not loaded: " +
                                       sim->lastLoadError());
                }
            }
            simKernel = std::move(owned);
            simBinder = std::make_unique<svad::sim::DriverBinderSim>(
                sysfsRoot, devRootDir, *sim, [&currentHost](const std::string& address) {
                    return svad::sim::SimConfig::pasidLog2(currentHost(), address);
                });
            crash = std::make_unique<svad::sim::CrashPoints>(sysfsRoot);
            kernel = std::make_unique<svad::sim::CrashingKernel>(*simKernel, *crash);
            binder = std::make_unique<svad::sim::CrashingBinder>(*simBinder, *crash);
        } else {
            kernel = std::make_unique<svad::linux_impl::KernelLinux>(devRootDir);
            binder = std::make_unique<svad::linux_impl::DriverBinderLinux>(sysfsRoot);
        }
        svad::ports::KernelFeatures features = kernel->probe();
        for (const auto& [feature, why] : features.absentReasons) {
            svad::log::info("kernel feature absent: " + why, {{"FEATURE", feature}});
        }
        // What a restart must not lose: every change is recorded before its reply.
        // Declared before the plugin host and the engine, which use them: the host's
        // release thread may record a rebind until the host is gone.
        std::unique_ptr<svad::linux_impl::SqliteStateStore> state;
        std::unique_ptr<svad::sim::CrashingStateStore> crashingState;
        std::unique_ptr<svad::ports::LockedStateStore> lockedState;
        svad::plugin_host::PluginHost plugins(*kernel, *binder);
        plugins.loadDirectory(config->pluginDir);
        if (auto errors = plugins.configure(*config); !errors.empty()) {
            for (const auto& e : errors) {
                (void)std::fprintf(stderr, "svad: configuration: %s: %s\n",
                                   configPath.value_or("(defaults)").c_str(), e.c_str());
            }
            return kExitUsage;
        }
        svad::core::PasidAllocator pasids;
        svad::core::Engine engine(*kernel, pasids, plugins);
        engine.setConfig(config);
        // The fds of the contexts, kept by the service manager across restarts.
        svad::linux_impl::SystemdFdStore fdStore;
        std::vector<svad::ports::StoredFd> passedFds =
            svad::linux_impl::SystemdFdStore::takePassed();
        if (*opts.stateDir != "off") {
            try {
                state = svad::linux_impl::SqliteStateStore::open(*opts.stateDir);
            } catch (const svad::ports::StateError& e) {
                (void)std::fprintf(stderr, "svad: state directory %s: %s\n", opts.stateDir->c_str(),
                                   e.what());
                return kExitFailure;
            }
            const auto& report = state->openReport();
            svad::log::info(std::string("state: ") + svad::linux_impl::outcomeName(report.outcome),
                            {{"PATH", report.path}, {"VERSION", std::to_string(report.version)}});
            if (report.outcome == svad::linux_impl::StateOpenReport::Outcome::MovedAsideCorrupt ||
                report.outcome == svad::linux_impl::StateOpenReport::Outcome::MovedAsideNewer) {
                // The ids the old database handed out are unknown: the new ones start
                // at the clock's seconds, far above any a database counted up to, so a
                // client's stale path never names a new context.
                const auto now = static_cast<uint64_t>(std::time(nullptr));
                try {
                    state->raiseNextContextId(now);
                    svad::log::notice("state: context ids go on from " + std::to_string(now) +
                                      " after the database was moved aside");
                } catch (const svad::ports::StateError& e) {
                    (void)std::fprintf(stderr, "svad: state directory %s: %s\n",
                                       opts.stateDir->c_str(), e.what());
                    return kExitFailure;
                }
            }
            svad::ports::StateStore* inner = state.get();
            if (crash) {
                crashingState = std::make_unique<svad::sim::CrashingStateStore>(*state, *crash);
                inner = crashingState.get();
            }
            // The engine writes on the loop and on its workers (a release forgets its
            // context there); the plugin host records rebinds on workers.
            lockedState = std::make_unique<svad::ports::LockedStateStore>(*inner);
            engine.setStateStore(lockedState.get(),
                                 [](pid_t pid) { return svad::linux_impl::processStartTime(pid); });
            plugins.setStateStore(lockedState.get());
            engine.setFdStore(&fdStore);
        }
        // A reload validates the whole new file and the plugins' settings first;
        // any error leaves the running configuration as it is. Reading and checking
        // run on a thread of their own, one reload at a time, so that a slow file or
        // plugin never holds up the loop; only installing the result runs on the loop.
        std::shared_ptr<const svad::core::Config> configured = config; // reload thread only
        boost::asio::thread_pool reloadThread(1);
        svad::dbus::nameThreads(reloadThread, 1, "svad-reload");
        auto reload = [&io, &engine, &plugins, &reloadThread, &configured,
                       configPath](svad::dbus::ServiceOptions::ReloadDone done) {
            boost::asio::post(reloadThread, [&io, &engine, &plugins, &configured, configPath,
                                             done = std::move(done)]() {
                std::vector<std::string> errors;
                std::shared_ptr<const svad::core::Config> next =
                    svad::core::defaultConfig(SVAD_PLUGIN_DIR);
                if (configPath) {
                    auto load = svad::linux_impl::loadConfig(*configPath, SVAD_PLUGIN_DIR);
                    errors = std::move(load.errors);
                    next = load.config;
                }
                if (errors.empty()) {
                    errors = plugins.configure(*next, configured.get());
                }
                if (errors.empty()) {
                    configured = next;
                } else {
                    next.reset();
                }
                boost::asio::post(
                    io, [&engine, configPath, next, errors = std::move(errors), done]() mutable {
                        if (next) {
                            const auto& old = engine.config();
                            if (next->pluginDir != old.pluginDir || next->backend != old.backend ||
                                next->sysfsRoot != old.sysfsRoot || next->devRoot != old.devRoot ||
                                next->metricsAddress != old.metricsAddress) {
                                svad::log::notice("configuration: plugin_dir, backend, roots and "
                                                  "metrics take effect at the next start");
                            }
                            engine.setConfig(next);
                            svad::log::notice("configuration reloaded",
                                              {{"CONFIG", configPath.value_or("(defaults)")},
                                               {"RULES", std::to_string(next->rules.size())}});
                        }
                        done(std::move(errors));
                    });
            });
        };
        std::unique_ptr<svad::metrics::Metrics> metrics;
        const std::string metricsAddress = opts.metricsAddress.value_or(config->metricsAddress);
        if (metricsAddress != "off") {
            metrics = std::make_unique<svad::metrics::Metrics>(SVAD_VERSION, backend);
            try {
                metrics->serve(metricsAddress);
            } catch (const svad::metrics::MetricsError& e) {
                (void)std::fprintf(stderr, "svad: metrics: %s\n", e.what());
                return kExitFailure;
            }
            for (uint16_t port : metrics->ports()) {
                svad::log::info("metrics served",
                                {{"ADDRESS", metricsAddress}, {"PORT", std::to_string(port)}});
            }
        }

        auto t1 = Clock::now();
        auto connection = svad::dbus::connectBus(opts.bus);
        svad::dbus::BusLoop loop(io, *connection);
        auto service = std::make_unique<svad::dbus::Service>(
            io, *connection, loop,
            svad::dbus::ServiceOptions{
                backend, sysfsRoot, devRootDir,
                [sim, &manager, devRoot = devRootDir,
                 started = false](const svad::core::Host& h) mutable {
                    if (sim != nullptr) {
                        sim->setDevices(svad::sim::SimConfig::fromHost(h, devRoot));
                    }
                    if (started) {
                        manager.status(h);
                    }
                    started = true;
                },
                reload,
                [&plugins] {
                    std::vector<sdbus::Struct<std::string, std::string, std::string, uint32_t,
                                              std::vector<std::string>>>
                        out;
                    for (const auto& p : plugins.plugins()) {
                        out.emplace_back(p.name, p.version, p.path, p.abi, p.kinds);
                    }
                    return out;
                },
                [&plugins] {
                    std::vector<sdbus::Struct<std::string, std::string>> out;
                    for (const auto& r : plugins.refusals()) {
                        out.emplace_back(r.path, r.reason);
                    }
                    return out;
                },
                metrics.get(), [&kernel] { return kernel->probe(); },
                [](pid_t pid) { return svad::linux_impl::processUid(pid); }},
            scan, engine, features);
        currentHost = [&service]() -> const svad::core::Host& { return service->host(); };
        // A plugin gave functions back to their drivers (on its release thread): rescan.
        plugins.setOnReleased([&io, &service, &plugins](uint64_t change) {
            boost::asio::post(io, [&service, &plugins, change] {
                if (service) {
                    service->rescan([&plugins, change](const std::optional<std::string>& error) {
                        if (error) {
                            svad::log::warning("rescan after a driver was given back failed: " +
                                               *error);
                        }
                        plugins.rescanned(change);
                    });
                }
            });
        });
        service->publishInitial(std::move(host));
        // The contexts of the last run, before anyone can ask for their devices.
        const auto restored = engine.restore(
            [](pid_t pid, uint64_t startTime) {
                return startTime != 0 && svad::linux_impl::processStartTime(pid) == startTime;
            },
            std::move(passedFds));
        if (restored.kept + restored.reserved + restored.released + restored.fdsClosed +
                restored.givenBack >
            0) {
            svad::log::notice("contexts of the last run taken back",
                              {{"KEPT", std::to_string(restored.kept)},
                               {"RESERVED", std::to_string(restored.reserved)},
                               {"RELEASED", std::to_string(restored.released)},
                               {"FDS_CLOSED", std::to_string(restored.fdsClosed)},
                               {"AUTO_BIND_GIVEN_BACK", std::to_string(restored.givenBack)}});
        }
        svad::log::debug("objects registered", {{"MS", msSince(t1)}});
        // Hotplug: the libudev monitor, on this loop.
        std::unique_ptr<svad::dbus::Hotplug> hotplug;
        if (udev) {
            hotplug = std::make_unique<svad::dbus::Hotplug>(
                io, *service, *udev,
                [sysfsRoot](const svad::core::Host& previous,
                            const svad::core::HostChanges& changes) {
                    return svad::core::refresh(svad::linux_impl::SysfsReader(sysfsRoot), previous,
                                               changes);
                },
                metrics.get(), opts.hotplugSettle);
            hotplug->start();
        }
        try {
            svad::dbus::compat::requestName(*connection, std::string(svad::names::kService));
        } catch (const sdbus::Error& e) {
            (void)std::fprintf(stderr, "svad: cannot own %s on %s (is another svad running?): %s\n",
                               std::string(svad::names::kService).c_str(), opts.bus.c_str(),
                               e.getMessage().c_str());
            return kExitFailure;
        }
        svad::log::notice("svad " SVAD_VERSION " ready",
                          {{"BUS", opts.bus},
                           {"BACKEND", backend},
                           {"SYSFS_ROOT", sysfsRoot},
                           {"CONFIG", configPath.value_or("(defaults)")},
                           {"PLUGINS", std::to_string(plugins.plugins().size())}});

        // Losing the bus is fatal and loud: systemd restarts a svad that exits non-zero,
        // never one that lives on deaf.
        int exitCode = 0;
        loop.setOnLost([&io, &manager, &exitCode, bus = opts.bus](const std::string& why) {
            svad::log::error("lost the bus connection, stopping: " + why, {{"BUS", bus}});
            exitCode = kExitFailure;
            manager.stopping();
            io.stop();
        });
        manager.setRoundTrip(
            [&loop](std::function<void(bool)> done) { loop.ping(std::move(done)); });
        manager.ready(service->host());
        stopSignals.async_wait(
            [&io, &loop, &manager, &service](const boost::system::error_code& ec, int sig) {
                if (!ec) {
                    svad::log::notice(std::string("stopping on ") + ::strsignal(sig));
                    manager.stopping();
                    service->stopping();
                    loop.stop();
                    io.stop();
                }
            });
        std::function<void()> waitHup;
        waitHup = [&hupSignal, &service, &waitHup, &reload] {
            hupSignal.async_wait(
                [&service, &waitHup, &reload](const boost::system::error_code& ec, int) {
                    if (ec) {
                        return;
                    }
                    svad::log::notice("SIGHUP: reloading the configuration, rescanning the host");
                    reload([&service](std::vector<std::string> errors) {
                        // A file can hold any number of errors: the log names the first ones.
                        constexpr size_t kMaxLogged = 20;
                        for (size_t i = 0; i < errors.size() && i < kMaxLogged; ++i) {
                            svad::log::error("configuration not reloaded: " + errors[i]);
                        }
                        if (errors.size() > kMaxLogged) {
                            svad::log::error("configuration not reloaded: " +
                                             std::to_string(errors.size() - kMaxLogged) +
                                             " more errors");
                        }
                        service->rescan();
                    });
                    waitHup();
                });
        };
        waitHup();

        loop.start();
        io.run();
        if (exitCode != 0) {
            return exitCode;
        }

        svad::dbus::compat::releaseName(*connection, std::string(svad::names::kService));
        plugins.setOnReleased({});
        hotplug.reset();
        service.reset();
    } catch (const sdbus::Error& e) {
        (void)std::fprintf(stderr, "svad: D-Bus: %s: %s\n", e.getName().c_str(),
                           e.getMessage().c_str());
        return kExitFailure;
    } catch (const std::exception& e) {
        (void)std::fprintf(stderr, "svad: %s\n", e.what());
        return kExitFailure;
    }
    return 0;
}
