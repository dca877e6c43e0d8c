#include "fixture.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <thread>
#include <unistd.h>

namespace svad::test {

namespace fs = std::filesystem;

TempDir::TempDir() : TempDir(fs::temp_directory_path().string()) {}

TempDir::TempDir(const std::string& base) {
    std::string tmpl = (fs::path(base) / "svad-bus-test.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    path_ = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

namespace {

[[noreturn]] void execOrDie(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
}

std::string readFile(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

} // namespace

Process::Process(const std::vector<std::string>& argv, const std::string& logFile,
                 const std::vector<std::pair<std::string, int>>& passFds)
    : logFile_(logFile) {
    // Prepared before the fork: the child only moves fds and sets the environment.
    std::string names;
    for (const auto& [name, fd] : passFds) {
        names += (names.empty() ? "" : ":") + name;
    }
    int out = ::open(logFile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        throw std::runtime_error("cannot create " + logFile);
    }
    pid_ = ::fork();
    if (pid_ < 0) {
        ::close(out);
        throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
        int null = ::open("/dev/null", O_RDONLY);
        if (null >= 0) {
            ::dup2(null, STDIN_FILENO);
        }
        if (!passFds.empty()) {
            // As a service manager passes them: at 3, 4, ..., named in LISTEN_FDNAMES.
            std::vector<int> high;
            for (const auto& [name, fd] : passFds) {
                high.push_back(::fcntl(fd, F_DUPFD, 1000));
            }
            for (size_t i = 0; i < high.size(); ++i) {
                ::dup2(high[i], 3 + static_cast<int>(i));
                ::close(high[i]);
            }
            ::setenv("LISTEN_FDS", std::to_string(passFds.size()).c_str(), 1);
            ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
            ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
        }
        // Nothing else of the test's goes along (an fd a test holds without
        // O_CLOEXEC, such as a UnixFd's copy, would look like svad's own).
        const unsigned first = 3 + static_cast<unsigned>(passFds.size());
        if (::syscall(SYS_close_range, first, ~0U, 0) != 0) {
            for (int fd = static_cast<int>(first); fd < 4096; ++fd) {
                ::close(fd);
            }
        }
        execOrDie(argv);
    }
    ::close(out);
}

Process::~Process() {
    if (running()) {
        signal(SIGKILL);
        wait(5000);
    }
}

bool Process::running() {
    if (pid_ <= 0 || status_ != -1) {
        return false;
    }
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = st;
        return false;
    }
    return r == 0;
}

void Process::signal(int sig) {
    if (running()) {
        ::kill(pid_, sig);
    }
}

int Process::wait(int timeoutMs) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (running()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
}

std::string Process::log() const {
    return readFile(logFile_);
}

PrivateBus::PrivateBus(const std::string& dir, const std::string& configFile) {
    const std::string socket = dir + "/bus";
    address_ = "unix:path=" + socket;
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{"dbus-daemon",
                                 configFile.empty() ? "--session" : "--config-file=" + configFile,
                                 "--address=" + address_, "--nofork", "--nopidfile", "--nosyslog"},
        dir + "/dbus-daemon.log");
    // Ready when it accepts a connection (the socket file exists before listen()).
    for (int i = 0; i < 500; ++i) {
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        (void)std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", socket.c_str());
        bool up = fd >= 0 && ::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0;
        if (fd >= 0) {
            ::close(fd);
        }
        if (up) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("dbus-daemon did not start: " + daemon_->log());
}

RunResult runCommand(const std::vector<std::string>& argv) {
    TempDir dir;
    const std::string out = dir.path() + "/out";
    const std::string err = dir.path() + "/err";
    pid_t pid = ::fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(o, STDOUT_FILENO);
        ::dup2(e, STDERR_FILENO);
        execOrDie(argv);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    RunResult r;
    r.exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.output = readFile(out);
    r.errors = readFile(err);
    return r;
}

bool waitUntil(const std::function<bool()>& done, int timeoutMs) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (std::chrono::steady_clock::now() < deadline) {
        if (done()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
}

Percentiles percentiles(std::vector<double> sample) {
    if (sample.empty()) {
        return {};
    }
    std::sort(sample.begin(), sample.end());
    auto at = [&sample](double q) {
        size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(sample.size())));
        return sample[std::min(sample.size() - 1, i == 0 ? 0 : i - 1)];
    };
    return {at(0.50), at(0.99)};
}

uint16_t freePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw std::runtime_error("socket failed");
    }
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0 ||
        ::getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot find a free port");
    }
    ::close(fd);
    return ntohs(sa.sin_port);
}

std::string httpGet(uint16_t port, const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw std::runtime_error("socket failed");
    }
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    struct timeval tv {
        5, 0
    };
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    }
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        ::close(fd);
        throw std::runtime_error("cannot send the request");
    }
    std::string response;
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            ::close(fd);
            throw std::runtime_error("no answer from 127.0.0.1:" + std::to_string(port));
        }
        if (n == 0) {
            break;
        }
        response.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    auto body = response.find("\r\n\r\n");
    if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") == std::string::npos ||
        body == std::string::npos) {
        throw std::runtime_error("not a 200 answer: " + response.substr(0, 200));
    }
    return response.substr(body + 4);
}

double metricValue(const std::string& exposition, const std::string& series) {
    std::istringstream in(exposition);
    std::string line;
    while (std::getline(in, line)) {
        if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
            line[series.size()] == ' ') {
            return std::stod(line.substr(series.size() + 1));
        }
    }
    return -1;
}

std::string allocateWithoutFdPassing(const std::string& bus, const std::string& vm,
                                     const std::vector<std::string>& devices,
                                     uint64_t timeoutUsec) {
    auto check = [](int r, const char* what) {
        if (r < 0) {
            throw std::runtime_error(std::string(what) + ": " + std::strerror(-r));
        }
    };
    sd_bus* raw = nullptr;
    check(sd_bus_new(&raw), "sd_bus_new");
    std::unique_ptr<sd_bus, decltype(&sd_bus_flush_close_unref)> conn(raw,
                                                                      sd_bus_flush_close_unref);
    check(sd_bus_set_address(conn.get(), bus.c_str()), "sd_bus_set_address");
    check(sd_bus_set_bus_client(conn.get(), 1), "sd_bus_set_bus_client");
    check(sd_bus_negotiate_fds(conn.get(), 0), "sd_bus_negotiate_fds");
    check(sd_bus_start(conn.get()), "sd_bus_start");
    sd_bus_message* m = nullptr;
    check(sd_bus_message_new_method_call(conn.get(), &m, "org.svad.Svad1", "/org/svad/Svad1",
                                         "org.svad.Svad1.Manager", "AllocateContext"),
          "new method call");
    std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> call(m, sd_bus_message_unref);
    check(sd_bus_message_append(call.get(), "s", vm.c_str()), "append vm");
    check(sd_bus_message_open_container(call.get(), 'a', "s"), "open devices");
    for (const auto& d : devices) {
        check(sd_bus_message_append(call.get(), "s", d.c_str()), "append device");
    }
    check(sd_bus_message_close_container(call.get()), "close devices");
    check(sd_bus_message_open_container(call.get(), 'a', "{sv}"), "open options");
    check(sd_bus_message_close_container(call.get()), "close options");
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    const int r = sd_bus_call(conn.get(), call.get(), timeoutUsec, &error, &reply);
    sd_bus_message_unref(reply);
    std::string name = r < 0 && error.name != nullptr ? error.name : "";
    if (r < 0 && name.empty()) {
        name = r == -ETIMEDOUT ? "org.freedesktop.DBus.Error.Timeout" : std::strerror(-r);
    }
    sd_bus_error_free(&error);
    return name;
}

hostgen::HostSpec testHost() {
    using namespace hostgen;
    HostSpec h;
    h.name = "bus-test";
    // Sapphire Rapids-like VT-d: scalable mode, PASID (20 bits), nesting, PRS, first level.
    constexpr uint64_t kEcap = (1ULL << 47) | (1ULL << 46) | (1ULL << 43) | (1ULL << 40) |
                               (19ULL << 35) | (1ULL << 29) | (1ULL << 26) | (1ULL << 6) |
                               (1ULL << 3) | (1ULL << 2) | (1ULL << 1);
    h.units.push_back(UnitSpec{"dmar0", 0x00d2008c40660462ULL, kEcap, "6:0"});
    for (uint32_t g : {1U, 2U, 3U, 4U, 5U}) {
        h.groups.push_back(GroupSpec{g, "DMA", {"0x00000000fee00000 0x00000000feefffff msi"}});
    }

    DeviceSpec dsa;
    dsa.address = "0000:6a:01.0";
    dsa.vendor = 0x8086;
    dsa.device = 0x0b25;
    dsa.classCode = 0x088000;
    dsa.driver = "idxd";
    dsa.numaNode = 0;
    dsa.group = 1;
    dsa.iommu = "dmar0";
    dsa.pasid = PasidSpec{20, false, true};
    dsa.ats = true;
    dsa.pri = true;
    dsa.siov = true;
    dsa.idxdName = "dsa0";
    dsa.queues.push_back(QueueSpec{"wq0.0", "dedicated", "user", "enabled", 16, 0, "app1", true});
    dsa.queues.push_back(QueueSpec{"wq0.1", "shared", "user", "enabled", 32, 0, "shared", true});
    dsa.queues.push_back(QueueSpec{"wq0.2", "dedicated", "kernel", "disabled", 8, 1, "", false});
    h.devices.push_back(dsa);

    DeviceSpec nic;
    nic.address = "0000:3b:00.0";
    nic.vendor = 0x15b3;
    nic.device = 0x101d;
    nic.classCode = 0x020000;
    nic.driver = "mlx5_core";
    nic.group = 2;
    nic.iommu = "dmar0";
    nic.ats = true;
    nic.acs = true;
    nic.sriov = SriovSpec{8, 2, 0x101e, "vfio-pci"};
    // Both VFs on vfio-pci with their cdevs (the GPU has vfio0).
    nic.sriov->vfs.push_back(VfSpec{0, std::nullopt, "", 1U, {}});
    nic.sriov->vfs.push_back(VfSpec{1, std::nullopt, "", 2U, {}});
    nic.vdpa.push_back(VdpaSpec{"vdpa0", "vhost_vdpa", ""});
    h.devices.push_back(nic);

    // Group 3: a GPU bound to vfio-pci with its audio function on a host driver.
    DeviceSpec gpu;
    gpu.address = "0000:17:00.0";
    gpu.vendor = 0x10de;
    gpu.device = 0x2236;
    gpu.classCode = 0x030200;
    gpu.driver = "vfio-pci";
    gpu.group = 3;
    gpu.iommu = "dmar0";
    gpu.vfio = 0;
    gpu.ats = true;
    gpu.pasid = PasidSpec{20, true, true};
    h.devices.push_back(gpu);
    DeviceSpec audio;
    audio.address = "0000:17:00.1";
    audio.vendor = 0x10de;
    audio.device = 0x1aef;
    audio.classCode = 0x040300;
    audio.driver = "snd_hda_intel";
    audio.group = 3;
    audio.iommu = "dmar0";
    h.devices.push_back(audio);

    // Group 4: what an unprivileged read of config gives: 64 bytes.
    DeviceSpec nvme;
    nvme.address = "0000:5e:00.0";
    nvme.vendor = 0x144d;
    nvme.device = 0xa80a;
    nvme.classCode = 0x010802;
    nvme.driver = "nvme";
    nvme.group = 4;
    nvme.iommu = "dmar0";
    nvme.configSize = 64;
    h.devices.push_back(nvme);

    h.softwareVdpa.push_back(VdpaSpec{"vdpa-sim0", "vhost_vdpa", "vdpasim_net"});
    return h;
}

SvadFixture::SvadFixture(const hostgen::HostSpec& host, std::vector<std::string> extraArgs,
                         const std::string& hostRoot, const std::string& busConfig,
                         const std::function<void(const std::string&)>& alterTree)
    : hostRoot_(hostRoot.empty() ? dir_.path() + "/host" : hostRoot) {
    hostgen::writeTree(host, hostRoot_);
    if (alterTree) {
        alterTree(sysfs());
    }
    bus_ = std::make_unique<PrivateBus>(dir_.path(), busConfig);
    std::vector<std::string> argv = {SVAD_BINARY,    "--bus", bus_->address(), "--backend", "sim",
                                     "--sysfs-root", sysfs(), "--dev-root",    devRoot()};
    if (std::find(extraArgs.begin(), extraArgs.end(), "--metrics-address") == extraArgs.end()) {
        // Tests run side by side: none takes the default port.
        argv.insert(argv.end(), {"--metrics-address", "off"});
    }
    if (std::find(extraArgs.begin(), extraArgs.end(), "--config") == extraArgs.end()) {
        // svad's own plugins from the build tree, and every device for everyone.
        const std::string config = dir_.path() + "/svad.yaml";
        std::ofstream(config) << "plugin_dir: " << SVAD_PLUGIN_BUILD_DIR << "\n"
                              << "default_policy: allow\n";
        argv.insert(argv.end(), {"--config", config});
    }
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    argv_ = argv;
    functions_ = hostgen::statsOf(hostgen::expandHost(host)).functions;
    svad_ = std::make_unique<Process>(argv, dir_.path() + "/svad.log");
    client_ = sdbus::createSessionBusConnectionWithAddress(bus_->address());
    waitForName();
}

void SvadFixture::restart(int sig, const std::vector<std::pair<std::string, int>>& passFds) {
    svad_->signal(sig);
    if (svad_->wait(10000) == -1) {
        throw std::runtime_error("svad did not stop on signal " + std::to_string(sig));
    }
    // The bus lets the name go once it has seen the connection close.
    auto dbus =
        svad::dbus::compat::makeProxy(*client_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool has = true;
    while (has && std::chrono::steady_clock::now() < deadline) {
        dbus->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string("org.svad.Svad1"))
            .storeResultsTo(has);
        if (has) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    ++starts_;
    svad_ = std::make_unique<Process>(
        argv_, dir_.path() + "/svad." + std::to_string(starts_) + ".log", passFds);
    waitForName();
}

void SvadFixture::waitForName() {
    // Ready when the name has an owner.
    auto dbus =
        svad::dbus::compat::makeProxy(*client_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    // 10 s, and more for a large host: start-up reads every function.
    const auto functions = functions_;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10) +
                          std::chrono::milliseconds(5 * functions);
    while (std::chrono::steady_clock::now() < deadline) {
        bool has = false;
        dbus->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string("org.svad.Svad1"))
            .storeResultsTo(has);
        if (has) {
            return;
        }
        if (!svad_->running()) {
            throw std::runtime_error("svad exited during start-up: " + svad_->log());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("svad did not take its name: " + svad_->log());
}

std::string systemBusConfig(const TempDir& dir, bool svadPolicy) {
    const std::string path = dir.path() + "/bus.conf";
    std::ofstream out(path);
    out << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
           " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
           "<busconfig>\n"
           "  <type>system</type>\n"
           "  <listen>unix:tmpdir=/tmp</listen>\n"
           "  <auth>EXTERNAL</auth>\n"
           "  <policy context=\"default\">\n"
           "    <allow user=\"*\"/>\n"
           "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
           "    <allow eavesdrop=\"true\"/>\n";
    if (!svadPolicy) {
        out << "    <allow own=\"*\"/>\n";
    }
    out << "  </policy>\n";
    if (svadPolicy) {
        out << "  <include>" << SVAD_SOURCE_DIR << "/dbus/org.svad.Svad1.conf</include>\n";
    }
    out << "</busconfig>\n";
    return path;
}

std::unique_ptr<SvadFixture> underWatchdog(const NotifySocket& sock,
                                           std::vector<std::string> extraArgs) {
    ::setenv("NOTIFY_SOCKET", sock.path().c_str(), 1);
    ::setenv("WATCHDOG_USEC", "200000", 1);
    std::unique_ptr<SvadFixture> f;
    try {
        f = std::make_unique<SvadFixture>(testHost(), std::move(extraArgs));
    } catch (...) {
        ::unsetenv("NOTIFY_SOCKET");
        ::unsetenv("WATCHDOG_USEC");
        throw;
    }
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    return f;
}

SvadFixture::~SvadFixture() {
    client_.reset();
    if (svad_->running()) {
        svad_->signal(SIGTERM);
        svad_->wait(5000);
    }
}

sdbus::ObjectPath SvadFixture::allocate(const std::string& vm,
                                        const std::vector<std::string>& devices) {
    return allocateContext(*proxy("/org/svad/Svad1"), vm, devices).path;
}

Allocated allocateContext(sdbus::IProxy& manager, const std::string& vm,
                          const std::vector<std::string>& devices,
                          const std::map<std::string, sdbus::Variant>& options) {
    Allocated a;
    manager.callMethod("AllocateContext")
        .onInterface("org.svad.Svad1.Manager")
        .withArguments(vm, devices, options)
        .storeResultsTo(a.path, a.iommufd, a.fds, a.info);
    return a;
}

double micros(std::chrono::steady_clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
}

int fdCount(pid_t pid) {
    DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
    if (d == nullptr) {
        return -1;
    }
    int n = 0;
    while (const struct dirent* e = ::readdir(d)) {
        n += e->d_name[0] != '.' ? 1 : 0;
    }
    ::closedir(d);
    return n;
}

long rssKiB(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::atol(line.c_str() + 6);
        }
    }
    return -1;
}

hostgen::HostSpec vfioHost(const std::string& name, uint32_t count) {
    using namespace hostgen;
    HostSpec h;
    h.name = name;
    constexpr uint64_t kEcap = (1ULL << 47) | (1ULL << 46) | (1ULL << 43) | (1ULL << 40) |
                               (19ULL << 35) | (1ULL << 29) | (1ULL << 26) | (1ULL << 6) |
                               (1ULL << 3) | (1ULL << 2) | (1ULL << 1);
    h.units.push_back(UnitSpec{"dmar0", 0x00d2008c40660462ULL, kEcap, "6:0"});
    for (uint32_t i = 0; i < count; ++i) {
        h.groups.push_back(GroupSpec{i + 1, "DMA", {"0x00000000fee00000 0x00000000feefffff msi"}});
        DeviceSpec d;
        char addr[32];
        (void)std::snprintf(addr, sizeof addr, "0000:%02x:%02x.0", 0x81 + i / 32, i % 32);
        d.address = addr;
        d.vendor = 0x15b3;
        d.device = 0x101e;
        d.classCode = 0x020000;
        d.driver = "vfio-pci";
        d.driverOverride = "vfio-pci";
        d.group = i + 1;
        d.iommu = "dmar0";
        d.vfio = i;
        d.ats = true;
        d.pasid = PasidSpec{20, false, true};
        h.devices.push_back(d);
    }
    return h;
}

void parseIntOptions(int argc, char** argv, std::initializer_list<IntOption> options) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const IntOption* option = nullptr;
        for (const auto& o : options) {
            if (a == o.name) {
                option = &o;
            }
        }
        if (option == nullptr) {
            (void)std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
            std::exit(2);
        }
        if (i + 1 >= argc) {
            (void)std::fprintf(stderr, "%s needs a value\n", a.c_str());
            std::exit(2);
        }
        const char* text = argv[++i];
        char* end = nullptr;
        long v = std::strtol(text, &end, 10);
        if (end == text || *end != '\0' || v < option->min || v > 1000000) {
            (void)std::fprintf(stderr, "%s needs a whole number from %d, not '%s'\n", a.c_str(),
                               option->min, text);
            std::exit(2);
        }
        *option->value = static_cast<int>(v);
    }
}

std::unique_ptr<sdbus::IProxy> SvadFixture::proxy(const std::string& path) {
    return svad::dbus::compat::makeProxy(*client_, "org.svad.Svad1", path);
}

sdbus::Variant SvadFixture::property(const std::string& path, const std::string& iface,
                                     const std::string& name) {
    auto p = proxy(path);
    return p->getProperty(name).onInterface(iface);
}

RunResult SvadFixture::svactl(std::vector<std::string> args) {
    args.insert(args.begin(), {SVACTL_BINARY, "--bus", bus_->address()});
    return runCommand(args);
}

} // namespace svad::test

namespace svad::test {

FdStoreManager::FdStoreManager(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    (void)std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
        throw std::runtime_error("cannot bind " + path);
    }
    reader_ = std::thread([this] { run(); });
}

FdStoreManager::~FdStoreManager() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
    for (auto& [name, fds] : store_) {
        for (int fd : fds) {
            ::close(fd);
        }
    }
}

void FdStoreManager::run() {
    while (!stop_) {
        struct pollfd p {
            fd_, POLLIN, 0
        };
        if (::poll(&p, 1, 20) <= 0) {
            continue;
        }
        std::lock_guard lock(mutex_);
        (void)receiveLocked();
    }
}

bool FdStoreManager::receiveLocked() {
    char buf[4096];
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    struct iovec iov {
        buf, sizeof buf - 1
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
        return false;
    }
    std::vector<int> fds;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
            fds.insert(fds.end(), data, data + count);
        }
    }
    const std::string text(buf, static_cast<size_t>(n));
    std::string name;
    bool store = false;
    bool remove = false;
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t end = text.find('\n', pos);
        const std::string line = text.substr(pos, end == std::string::npos ? end : end - pos);
        if (line == "FDSTORE=1") {
            store = true;
        } else if (line == "FDSTOREREMOVE=1") {
            remove = true;
        } else if (line.rfind("FDNAME=", 0) == 0) {
            name = line.substr(7);
        }
        if (end == std::string::npos) {
            break;
        }
        pos = end + 1;
    }
    if (store) {
        for (int fd : fds) {
            store_[name].push_back(fd);
        }
        fds.clear();
    } else if (remove) {
        for (int fd : store_[name]) {
            ::close(fd);
        }
        store_.erase(name);
    }
    for (int fd : fds) {
        ::close(fd); // not meant for the store
    }
    return true;
}

std::vector<std::pair<std::string, int>> FdStoreManager::stored() {
    std::lock_guard lock(mutex_);
    // What was sent before this call counts, read or not yet (systemd, too,
    // reads a dead service's last messages before it starts it again).
    while (receiveLocked()) {
    }
    std::vector<std::pair<std::string, int>> out;
    for (const auto& [name, fds] : store_) {
        for (int fd : fds) {
            out.emplace_back(name, fd);
        }
    }
    return out;
}

} // namespace svad::test
