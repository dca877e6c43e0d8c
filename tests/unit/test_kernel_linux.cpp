// The linux Kernel port against a fake ioctl and a temporary dev root of
// regular files: the request numbers, the structs sent, the decoding of the
// answers, the errors, the name checks and probe(). Nothing here touches the
// machine's /dev.
#include "../bus/acl_entries.h"
#include "svad/linux/kernel_linux.h"
#include "svad/linux/uapi.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

// Cross-checks against the build host's kernel headers, where they have the
// definitions (bookworm's 6.1 headers have VFIO_DEVICE_FEATURE, not iommufd
// nor the VFIO cdev ioctls; linux/vhost.h does not compile as C++).
#if __has_include(<linux/vfio.h>)
#include <linux/vfio.h>
#endif
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif

namespace svad::linux_impl {
namespace {

namespace fs = std::filesystem;

// ---- the ABI ------------------------------------------------------------------

static_assert(sizeof(uapi::iommu_destroy) == 8);
static_assert(sizeof(uapi::iommu_ioas_alloc) == 12);
static_assert(sizeof(uapi::iommu_ioas_iova_ranges) == 32);
static_assert(sizeof(uapi::iommu_iova_range) == 16);
static_assert(sizeof(uapi::iommu_option) == 24);
static_assert(sizeof(uapi::iommu_hw_info) == 40);
static_assert(sizeof(uapi::iommu_fault_alloc) == 16);
static_assert(sizeof(uapi::iommu_ioas_map) == 40);
static_assert(sizeof(uapi::vfio_device_bind_iommufd) == 16);
static_assert(sizeof(uapi::vfio_device_attach_iommufd_pt) == 16);
static_assert(sizeof(uapi::vfio_device_detach_iommufd_pt) == 12);
static_assert(alignof(uapi::iommu_iova_range) == 8);
static_assert(alignof(uapi::iommu_hw_info) == 8);

static_assert(uapi::kIommufdType == 0x3b);
static_assert(uapi::kVfioType == 0x3b && uapi::kVfioBase == 100);
static_assert(uapi::kVhostVirtio == 0xAF);
static_assert(uapi::kIommufdCmdFaultQueueAlloc == uapi::kIommufdCmdBase + 14);
// The IOMMU ioctls carry neither size nor direction; the vhost ones do.
static_assert(_IOC_SIZE(uapi::kIommuGetHwInfo) == 0 && _IOC_DIR(uapi::kIommuGetHwInfo) == 0);
static_assert(_IOC_TYPE(uapi::kIommuDestroy) == ';' && _IOC_NR(uapi::kIommuDestroy) == 0x80);
static_assert(_IOC_NR(uapi::kVfioDeviceBindIommufd) == 118);
static_assert(_IOC_NR(uapi::kVfioDeviceAttachIommufdPt) == 119);
static_assert(_IOC_NR(uapi::kVfioDeviceDetachIommufdPt) == 120);
static_assert(_IOC_DIR(uapi::kVhostVdpaGetGroupNum) == _IOC_READ &&
              _IOC_SIZE(uapi::kVhostVdpaGetGroupNum) == 4 &&
              _IOC_TYPE(uapi::kVhostVdpaGetGroupNum) == 0xAF &&
              _IOC_NR(uapi::kVhostVdpaGetGroupNum) == 0x81);
static_assert(_IOC_DIR(uapi::kVhostVdpaGetAsNum) == _IOC_READ &&
              _IOC_SIZE(uapi::kVhostVdpaGetAsNum) == 4 &&
              _IOC_NR(uapi::kVhostVdpaGetAsNum) == 0x7A);

#ifdef VFIO_DEVICE_FEATURE
// The same VFIO_TYPE and VFIO_BASE as the host's header.
static_assert(uapi::io(uapi::kVfioType, uapi::kVfioBase + 17) == VFIO_DEVICE_FEATURE);
#endif
#ifdef VFIO_DEVICE_BIND_IOMMUFD
static_assert(uapi::kVfioDeviceBindIommufd == VFIO_DEVICE_BIND_IOMMUFD);
static_assert(uapi::kVfioDeviceAttachIommufdPt == VFIO_DEVICE_ATTACH_IOMMUFD_PT);
static_assert(uapi::kVfioDeviceDetachIommufdPt == VFIO_DEVICE_DETACH_IOMMUFD_PT);
#endif
#ifdef IOMMU_DESTROY
static_assert(uapi::kIommuDestroy == IOMMU_DESTROY);
static_assert(uapi::kIommuIoasAlloc == IOMMU_IOAS_ALLOC);
static_assert(uapi::kIommuIoasIovaRanges == IOMMU_IOAS_IOVA_RANGES);
static_assert(uapi::kIommuIoasMap == IOMMU_IOAS_MAP);
static_assert(uapi::kIommuOption == IOMMU_OPTION);
static_assert(sizeof(uapi::iommu_destroy) == sizeof(struct ::iommu_destroy));
static_assert(sizeof(uapi::iommu_ioas_alloc) == sizeof(struct ::iommu_ioas_alloc));
static_assert(sizeof(uapi::iommu_ioas_iova_ranges) == sizeof(struct ::iommu_ioas_iova_ranges));
static_assert(sizeof(uapi::iommu_ioas_map) == sizeof(struct ::iommu_ioas_map));
static_assert(sizeof(uapi::iommu_option) == sizeof(struct ::iommu_option));
#endif
#ifdef IOMMU_GET_HW_INFO
static_assert(uapi::kIommuGetHwInfo == IOMMU_GET_HW_INFO);
static_assert(sizeof(uapi::iommu_hw_info) == sizeof(struct ::iommu_hw_info));
#endif
#ifdef IOMMU_FAULT_QUEUE_ALLOC
static_assert(uapi::kIommuFaultQueueAlloc == IOMMU_FAULT_QUEUE_ALLOC);
static_assert(sizeof(uapi::iommu_fault_alloc) == sizeof(struct ::iommu_fault_alloc));
#endif

// ---- the fake kernel -------------------------------------------------------------

size_t argSize(unsigned long request) {
    if (request == uapi::kIommuDestroy) {
        return sizeof(uapi::iommu_destroy);
    }
    if (request == uapi::kIommuIoasAlloc) {
        return sizeof(uapi::iommu_ioas_alloc);
    }
    if (request == uapi::kIommuIoasIovaRanges) {
        return sizeof(uapi::iommu_ioas_iova_ranges);
    }
    if (request == uapi::kIommuOption) {
        return sizeof(uapi::iommu_option);
    }
    if (request == uapi::kIommuGetHwInfo) {
        return sizeof(uapi::iommu_hw_info);
    }
    if (request == uapi::kIommuFaultQueueAlloc) {
        return sizeof(uapi::iommu_fault_alloc);
    }
    if (request == uapi::kVfioDeviceBindIommufd) {
        return sizeof(uapi::vfio_device_bind_iommufd);
    }
    if (request == uapi::kVfioDeviceAttachIommufdPt) {
        return sizeof(uapi::vfio_device_attach_iommufd_pt);
    }
    if (request == uapi::kVfioDeviceDetachIommufdPt) {
        return sizeof(uapi::vfio_device_detach_iommufd_pt);
    }
    if (request == uapi::kVhostVdpaGetGroupNum || request == uapi::kVhostVdpaGetAsNum) {
        return 4;
    }
    return 0;
}

struct Call {
    int fd;
    unsigned long request;
    std::vector<uint8_t> in; // the argument as sent
    template <typename T> T as() const {
        T t{};
        EXPECT_EQ(in.size(), sizeof(T));
        std::memcpy(&t, in.data(), std::min(in.size(), sizeof(T)));
        return t;
    }
};

// Answers each request number with a handler (0, or the errno to fail with);
// a number without one gets ENOTTY, as from a kernel that lacks it.
class FakeKernel {
public:
    using Handler = std::function<int(int fd, void* arg)>;

    void on(unsigned long request, Handler h) { handlers_[request] = std::move(h); }
    void fail(unsigned long request, int err) {
        on(request, [err](int, void*) { return err; });
    }
    void succeed(unsigned long request) {
        on(request, [](int, void*) { return 0; });
    }

    IoctlFn fn() {
        return [this](int fd, unsigned long request, void* arg) {
            Call c{fd, request, {}};
            size_t n = argSize(request);
            EXPECT_NE(n, 0u) << "unexpected request 0x" << std::hex << request;
            if (arg != nullptr && n != 0) {
                auto* p = static_cast<uint8_t*>(arg);
                c.in.assign(p, p + n);
            }
            calls.push_back(std::move(c));
            auto it = handlers_.find(request);
            int err = it == handlers_.end() ? ENOTTY : it->second(fd, arg);
            if (err != 0) {
                errno = err;
                return -1;
            }
            return 0;
        };
    }

    std::vector<Call> calls;

    size_t count(unsigned long request) const {
        size_t n = 0;
        for (const auto& c : calls) {
            n += c.request == request ? 1 : 0;
        }
        return n;
    }

private:
    std::map<unsigned long, Handler> handlers_;
};

struct OpenCall {
    std::string path;
    int flags;
};

// A dev root of regular files in a fresh temporary directory.
class DevRoot {
public:
    DevRoot() {
        const char* tmp = std::getenv("TMPDIR");
        std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                           "/svad-kernel-linux-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        char* made = ::mkdtemp(buf.data());
        if (made == nullptr) {
            ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
            return;
        }
        root_ = made;
    }
    ~DevRoot() {
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    DevRoot(const DevRoot&) = delete;
    DevRoot& operator=(const DevRoot&) = delete;

    const std::string& root() const { return root_; }
    std::string path(const std::string& rel) const { return root_ + "/" + rel; }

    void node(const std::string& rel) {
        fs::create_directories(fs::path(path(rel)).parent_path());
        std::ofstream(path(rel)).put('\0');
    }
    void dir(const std::string& rel) { fs::create_directories(path(rel)); }

    // A typical host: iommufd, one VFIO cdev, one vhost-vdpa, one wq.
    void full() {
        node("iommu");
        node("vfio/devices/vfio3");
        node("vhost-vdpa-0");
        node("dsa/wq0.1");
    }

private:
    std::string root_;
};

class KernelLinuxTest : public ::testing::Test {
protected:
    KernelLinuxTest() { dev.full(); }

    KernelLinux kernel() {
        return KernelLinux(
            dev.root(), fake.fn(),
            [this](const std::string& p, int flags) {
                opens.push_back({p, flags});
                return realOpen(p, flags);
            },
            [this] { return release; });
    }

    // An fd of a regular file named like a node, so messages name it.
    ports::UniqueFd openNode(const std::string& rel) {
        int fd = ::open(dev.path(rel).c_str(), O_RDWR | O_CLOEXEC);
        EXPECT_GE(fd, 0) << rel;
        return ports::UniqueFd(fd);
    }

    DevRoot dev;
    FakeKernel fake;
    std::vector<OpenCall> opens;
    std::string release = "6.15.0";
};

bool hasCloexec(int fd) {
    return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

std::string reasonFor(const ports::KernelFeatures& f, const std::string& name) {
    for (const auto& [k, v] : f.absentReasons) {
        if (k == name) {
            return v;
        }
    }
    return {};
}

// ---- iommufd ----------------------------------------------------------------------

TEST_F(KernelLinuxTest, OpenIommufdOpensTheNodeAndSetsProcessAccounting) {
    fake.succeed(uapi::kIommuOption);
    auto k = kernel();
    auto fd = k.openIommufd();
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    EXPECT_TRUE(fd->valid());
    EXPECT_TRUE(hasCloexec(fd->get()));

    ASSERT_EQ(opens.size(), 1u);
    EXPECT_EQ(opens[0].path, dev.path("iommu"));
    EXPECT_EQ(opens[0].flags, O_RDWR | O_CLOEXEC);

    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].fd, fd->get());
    EXPECT_EQ(fake.calls[0].request, uapi::kIommuOption);
    auto opt = fake.calls[0].as<uapi::iommu_option>();
    EXPECT_EQ(opt.size, 24u);
    EXPECT_EQ(opt.option_id, uapi::kIommuOptionRlimitMode);
    EXPECT_EQ(opt.op, uapi::kIommuOptionOpSet);
    EXPECT_EQ(opt.reserved, 0u);
    EXPECT_EQ(opt.object_id, 0u);
    EXPECT_EQ(opt.val64, 1u); // process based
    EXPECT_FALSE(k.lastRlimitError().has_value());
}

TEST_F(KernelLinuxTest, OpenIommufdKeepsTheFdWhenRlimitModeIsRefused) {
    for (int err : {EPERM, EBUSY, EOPNOTSUPP}) {
        FakeKernel f;
        f.fail(uapi::kIommuOption, err);
        KernelLinux k(dev.root(), f.fn());
        auto fd = k.openIommufd();
        ASSERT_TRUE(fd.ok()) << err;
        EXPECT_TRUE(fd->valid());
        auto refused = k.lastRlimitError();
        ASSERT_TRUE(refused.has_value());
        EXPECT_EQ(refused->err, err);
        EXPECT_EQ(refused->message.rfind("IOMMU_OPTION on iommu", 0), 0u) << refused->message;
        EXPECT_NE(refused->message.find(std::strerror(err)), std::string::npos);
    }
}

TEST_F(KernelLinuxTest, OpenIommufdFailsOnOtherOptionErrors) {
    fake.fail(uapi::kIommuOption, EINVAL);
    auto k = kernel();
    auto fd = k.openIommufd();
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.error().err, EINVAL);
    EXPECT_NE(fd.error().message.find("IOMMU_OPTION"), std::string::npos);
}

TEST_F(KernelLinuxTest, OpenIommufdSaysTheKernelLacksIommuOption) {
    // Not set: the fake answers ENOTTY.
    auto k = kernel();
    auto fd = k.openIommufd();
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.error().err, ENOTTY);
    EXPECT_NE(fd.error().message.find("the running kernel lacks IOMMU_OPTION"), std::string::npos)
        << fd.error().message;
}

TEST_F(KernelLinuxTest, OpenIommufdWithoutTheNode) {
    DevRoot empty;
    KernelLinux k(empty.root(), fake.fn());
    auto fd = k.openIommufd();
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.error().err, ENOENT);
    EXPECT_NE(fd.error().message.find(empty.path("iommu")), std::string::npos);
    EXPECT_TRUE(fake.calls.empty());
}

TEST_F(KernelLinuxTest, IoasAlloc) {
    fake.on(uapi::kIommuIoasAlloc, [](int, void* arg) {
        static_cast<uapi::iommu_ioas_alloc*>(arg)->out_ioas_id = 7;
        return 0;
    });
    auto k = kernel();
    auto id = k.ioasAlloc(42);
    ASSERT_TRUE(id.ok()) << id.error().message;
    EXPECT_EQ(*id, 7u);
    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].fd, 42);
    EXPECT_EQ(fake.calls[0].request, uapi::kIommuIoasAlloc);
    auto cmd = fake.calls[0].as<uapi::iommu_ioas_alloc>();
    EXPECT_EQ(cmd.size, 12u);
    EXPECT_EQ(cmd.flags, 0u);
}

TEST_F(KernelLinuxTest, IoasAllocErrorNamesTheIoctlAndTheFd) {
    fake.fail(uapi::kIommuIoasAlloc, ENOMEM);
    auto iommu = openNode("iommu");
    auto k = kernel();
    auto id = k.ioasAlloc(iommu.get());
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.error().err, ENOMEM);
    EXPECT_EQ(id.error().message,
              std::string("IOMMU_IOAS_ALLOC on iommu: ") + std::strerror(ENOMEM));
}

TEST_F(KernelLinuxTest, IoasIovaRangesAsksAgainWithTheSizeTheKernelGives) {
    static constexpr uint32_t kTotal = 11;
    fake.on(uapi::kIommuIoasIovaRanges, [](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_ioas_iova_ranges*>(arg);
        uint32_t room = cmd->num_iovas;
        cmd->num_iovas = kTotal;
        cmd->out_iova_alignment = 4096;
        auto* out = reinterpret_cast<uapi::iommu_iova_range*>(cmd->allowed_iovas);
        for (uint32_t i = 0; i < std::min(room, kTotal); ++i) {
            out[i].start = uint64_t(i) << 32;
            out[i].last = (uint64_t(i) << 32) + 0xfffff;
        }
        return room < kTotal ? EMSGSIZE : 0;
    });
    auto k = kernel();
    auto ranges = k.ioasIovaRanges(5, 3);
    ASSERT_TRUE(ranges.ok()) << ranges.error().message;
    ASSERT_EQ(ranges->size(), kTotal);
    for (uint32_t i = 0; i < kTotal; ++i) {
        EXPECT_EQ((*ranges)[i].start, uint64_t(i) << 32);
        EXPECT_EQ((*ranges)[i].last, (uint64_t(i) << 32) + 0xfffff);
    }
    ASSERT_EQ(fake.calls.size(), 2u);
    auto first = fake.calls[0].as<uapi::iommu_ioas_iova_ranges>();
    auto second = fake.calls[1].as<uapi::iommu_ioas_iova_ranges>();
    EXPECT_EQ(first.size, 32u);
    EXPECT_EQ(first.ioas_id, 3u);
    EXPECT_EQ(first.reserved, 0u);
    EXPECT_NE(first.allowed_iovas, 0u);
    EXPECT_LT(first.num_iovas, kTotal);
    EXPECT_EQ(second.num_iovas, kTotal);
    EXPECT_EQ(second.ioas_id, 3u);
}

TEST_F(KernelLinuxTest, IoasIovaRangesInOneCall) {
    fake.on(uapi::kIommuIoasIovaRanges, [](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_ioas_iova_ranges*>(arg);
        auto* out = reinterpret_cast<uapi::iommu_iova_range*>(cmd->allowed_iovas);
        out[0] = {0, 0xfedfffff};
        out[1] = {0xfef00000, 0xffffffffffffull};
        cmd->num_iovas = 2;
        return 0;
    });
    auto k = kernel();
    auto ranges = k.ioasIovaRanges(5, 1);
    ASSERT_TRUE(ranges.ok());
    ASSERT_EQ(ranges->size(), 2u);
    EXPECT_EQ((*ranges)[0].last, 0xfedfffffu);
    EXPECT_EQ((*ranges)[1].start, 0xfef00000u);
    EXPECT_EQ((*ranges)[1].last, 0xffffffffffffull);
    EXPECT_EQ(fake.calls.size(), 1u);
}

TEST_F(KernelLinuxTest, IoasIovaRangesUnknownIoas) {
    fake.fail(uapi::kIommuIoasIovaRanges, ENOENT);
    auto k = kernel();
    auto ranges = k.ioasIovaRanges(5, 99);
    ASSERT_FALSE(ranges.ok());
    EXPECT_EQ(ranges.error().err, ENOENT);
    EXPECT_EQ(ranges.error().message,
              std::string("IOMMU_IOAS_IOVA_RANGES on ioas 99: ") + std::strerror(ENOENT));
}

TEST_F(KernelLinuxTest, Destroy) {
    fake.succeed(uapi::kIommuDestroy);
    auto k = kernel();
    EXPECT_TRUE(k.destroy(5, 9).ok());
    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].request, uapi::kIommuDestroy);
    auto cmd = fake.calls[0].as<uapi::iommu_destroy>();
    EXPECT_EQ(cmd.size, 8u);
    EXPECT_EQ(cmd.id, 9u);

    fake.fail(uapi::kIommuDestroy, EBUSY);
    auto st = k.destroy(5, 9);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EBUSY);
    EXPECT_EQ(st.error().message,
              std::string("IOMMU_DESTROY on object 9: ") + std::strerror(EBUSY));
}

TEST_F(KernelLinuxTest, HwInfo) {
    fake.on(uapi::kIommuGetHwInfo, [](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_hw_info*>(arg);
        cmd->out_data_type = uapi::kIommuHwInfoTypeIntelVtd;
        cmd->out_capabilities = uapi::kIommuHwCapDirtyTracking | uapi::kIommuHwCapPciPasidExec;
        cmd->out_max_pasid_log2 = 20;
        cmd->data_len = 24;
        return 0;
    });
    auto k = kernel();
    auto info = k.hwInfo(5, 2);
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->type, 1u);
    EXPECT_EQ(info->capabilities, 3u);
    EXPECT_EQ(info->maxPasidLog2, 20);

    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].request, uapi::kIommuGetHwInfo);
    auto cmd = fake.calls[0].as<uapi::iommu_hw_info>();
    EXPECT_EQ(cmd.size, 40u);
    EXPECT_EQ(cmd.flags, 0u);
    EXPECT_EQ(cmd.dev_id, 2u);
    EXPECT_EQ(cmd.data_len, 0u);
    EXPECT_EQ(cmd.data_uptr, 0u);
    EXPECT_EQ(cmd.out_max_pasid_log2, 0u);
    EXPECT_EQ(cmd.reserved[0] | cmd.reserved[1] | cmd.reserved[2], 0);
}

TEST_F(KernelLinuxTest, HwInfoOnAKernelWithoutIt) {
    auto k = kernel(); // the fake answers ENOTTY
    auto info = k.hwInfo(5, 2);
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.error().err, ENOTTY);
    EXPECT_EQ(info.error().message, std::string("IOMMU_GET_HW_INFO on dev_id 2: ") +
                                        std::strerror(ENOTTY) +
                                        " (the running kernel lacks IOMMU_GET_HW_INFO)");
}

TEST_F(KernelLinuxTest, FaultQueueAlloc) {
    // The "kernel" hands out an fd without FD_CLOEXEC; the port sets it.
    int faultFd = ::open(dev.path("iommu").c_str(), O_RDONLY);
    ASSERT_GE(faultFd, 0);
    ASSERT_FALSE(hasCloexec(faultFd));
    fake.on(uapi::kIommuFaultQueueAlloc, [faultFd](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_fault_alloc*>(arg);
        cmd->out_fault_id = 4;
        cmd->out_fault_fd = static_cast<uint32_t>(faultFd);
        return 0;
    });
    auto k = kernel();
    auto q = k.faultQueueAlloc(5);
    ASSERT_TRUE(q.ok()) << q.error().message;
    EXPECT_EQ(q->id, 4u);
    EXPECT_EQ(q->fd.get(), faultFd);
    EXPECT_TRUE(hasCloexec(faultFd));
    ASSERT_EQ(fake.calls.size(), 1u);
    auto cmd = fake.calls[0].as<uapi::iommu_fault_alloc>();
    EXPECT_EQ(cmd.size, 16u);
    EXPECT_EQ(cmd.flags, 0u);
}

TEST_F(KernelLinuxTest, FaultQueueAllocOnAKernelWithoutIt) {
    auto iommu = openNode("iommu");
    auto k = kernel();
    auto q = k.faultQueueAlloc(iommu.get());
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.error().err, ENOTTY);
    EXPECT_EQ(q.error().message.rfind("IOMMU_FAULT_QUEUE_ALLOC on iommu: ", 0), 0u);
    EXPECT_NE(q.error().message.find("the running kernel lacks IOMMU_FAULT_QUEUE_ALLOC"),
              std::string::npos);
}

TEST_F(KernelLinuxTest, InterruptedCallsAreRetried) {
    int calls = 0;
    fake.on(uapi::kIommuIoasAlloc, [&calls](int, void* arg) {
        if (++calls < 3) {
            return EINTR;
        }
        static_cast<uapi::iommu_ioas_alloc*>(arg)->out_ioas_id = 2;
        return 0;
    });
    auto k = kernel();
    auto id = k.ioasAlloc(5);
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(*id, 2u);
    EXPECT_EQ(calls, 3);
}

// ---- VFIO --------------------------------------------------------------------------

TEST_F(KernelLinuxTest, OpenVfioDevice) {
    auto k = kernel();
    auto fd = k.openVfioDevice("vfio3");
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    EXPECT_TRUE(hasCloexec(fd->get()));
    ASSERT_EQ(opens.size(), 1u);
    EXPECT_EQ(opens[0].path, dev.path("vfio/devices/vfio3"));
    EXPECT_EQ(opens[0].flags, O_RDWR | O_CLOEXEC);

    auto missing = k.openVfioDevice("vfio4");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().err, ENOENT);
    EXPECT_NE(missing.error().message.find(dev.path("vfio/devices/vfio4")), std::string::npos);
}

TEST_F(KernelLinuxTest, VfioNamesCannotLeaveTheDevRoot) {
    dev.node("secret");
    auto k = kernel();
    for (const char* name :
         {"", "vfio", "..", ".", "../../secret", "vfio3/../../../secret", "/vfio3", "vfio3/",
          "vfio-3", "vfio3a", "VFIO3", "vfio 3", "vfio12345678901"}) {
        auto fd = k.openVfioDevice(name);
        ASSERT_FALSE(fd.ok()) << name;
        EXPECT_EQ(fd.error().err, EINVAL) << name;
    }
    EXPECT_TRUE(opens.empty());
    EXPECT_TRUE(KernelLinux::validVfioName("vfio0"));
    EXPECT_TRUE(KernelLinux::validVfioName("vfio123"));
}

TEST_F(KernelLinuxTest, VfioBind) {
    fake.on(uapi::kVfioDeviceBindIommufd, [](int, void* arg) {
        static_cast<uapi::vfio_device_bind_iommufd*>(arg)->out_devid = 6;
        return 0;
    });
    auto k = kernel();
    auto devid = k.vfioBind(10, 11);
    ASSERT_TRUE(devid.ok()) << devid.error().message;
    EXPECT_EQ(*devid, 6u);
    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].fd, 10);
    EXPECT_EQ(fake.calls[0].request, uapi::kVfioDeviceBindIommufd);
    auto cmd = fake.calls[0].as<uapi::vfio_device_bind_iommufd>();
    EXPECT_EQ(cmd.argsz, 16u);
    EXPECT_EQ(cmd.flags, 0u);
    EXPECT_EQ(cmd.iommufd, 11);
}

TEST_F(KernelLinuxTest, VfioBindErrorNamesTheDevice) {
    fake.fail(uapi::kVfioDeviceBindIommufd, EBUSY);
    auto device = openNode("vfio/devices/vfio3");
    auto k = kernel();
    auto devid = k.vfioBind(device.get(), 11);
    ASSERT_FALSE(devid.ok());
    EXPECT_EQ(devid.error().err, EBUSY);
    EXPECT_EQ(devid.error().message,
              std::string("VFIO_DEVICE_BIND_IOMMUFD on vfio3: ") + std::strerror(EBUSY));
}

TEST_F(KernelLinuxTest, VfioAttachWithoutPasid) {
    fake.succeed(uapi::kVfioDeviceAttachIommufdPt);
    auto k = kernel();
    EXPECT_TRUE(k.vfioAttach(10, 2, std::nullopt).ok());
    ASSERT_EQ(fake.calls.size(), 1u);
    EXPECT_EQ(fake.calls[0].request, uapi::kVfioDeviceAttachIommufdPt);
    auto cmd = fake.calls[0].as<uapi::vfio_device_attach_iommufd_pt>();
    EXPECT_EQ(cmd.argsz, 16u);
    EXPECT_EQ(cmd.flags, 0u);
    EXPECT_EQ(cmd.pt_id, 2u);
    EXPECT_EQ(cmd.pasid, 0u);
}

TEST_F(KernelLinuxTest, VfioAttachWithPasid) {
    fake.succeed(uapi::kVfioDeviceAttachIommufdPt);
    auto k = kernel();
    EXPECT_TRUE(k.vfioAttach(10, 2, 5).ok());
    auto cmd = fake.calls.at(0).as<uapi::vfio_device_attach_iommufd_pt>();
    EXPECT_EQ(cmd.argsz, 16u);
    EXPECT_EQ(cmd.flags, uapi::kVfioDeviceAttachPasid);
    EXPECT_EQ(cmd.flags, 1u);
    EXPECT_EQ(cmd.pt_id, 2u);
    EXPECT_EQ(cmd.pasid, 5u);
}

TEST_F(KernelLinuxTest, VfioAttachPasidOnAnOlderKernel) {
    // Before 6.15 any attach flag is EINVAL.
    fake.on(uapi::kVfioDeviceAttachIommufdPt, [](int, void* arg) {
        return static_cast<uapi::vfio_device_attach_iommufd_pt*>(arg)->flags != 0 ? EINVAL : 0;
    });
    auto device = openNode("vfio/devices/vfio3");
    auto k = kernel();
    auto st = k.vfioAttach(device.get(), 2, 5);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EINVAL);
    EXPECT_EQ(
        st.error().message.rfind("VFIO_DEVICE_ATTACH_IOMMUFD_PT on vfio3 (pt 2, pasid 5): ", 0), 0u)
        << st.error().message;
    EXPECT_NE(st.error().message.find("lacks VFIO_DEVICE_ATTACH_PASID"), std::string::npos);
    EXPECT_TRUE(k.vfioAttach(device.get(), 2, std::nullopt).ok());
}

TEST_F(KernelLinuxTest, VfioDetach) {
    fake.succeed(uapi::kVfioDeviceDetachIommufdPt);
    auto k = kernel();
    EXPECT_TRUE(k.vfioDetach(10, std::nullopt).ok());
    EXPECT_TRUE(k.vfioDetach(10, 7).ok());
    ASSERT_EQ(fake.calls.size(), 2u);
    EXPECT_EQ(fake.calls[0].request, uapi::kVfioDeviceDetachIommufdPt);
    auto whole = fake.calls[0].as<uapi::vfio_device_detach_iommufd_pt>();
    EXPECT_EQ(whole.argsz, 12u);
    EXPECT_EQ(whole.flags, 0u);
    EXPECT_EQ(whole.pasid, 0u);
    auto one = fake.calls[1].as<uapi::vfio_device_detach_iommufd_pt>();
    EXPECT_EQ(one.argsz, 12u);
    EXPECT_EQ(one.flags, uapi::kVfioDeviceDetachPasid);
    EXPECT_EQ(one.pasid, 7u);

    fake.fail(uapi::kVfioDeviceDetachIommufdPt, ENODEV);
    auto st = k.vfioDetach(10, std::nullopt);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, ENODEV);
    EXPECT_EQ(st.error().message.rfind("VFIO_DEVICE_DETACH_IOMMUFD_PT on ", 0), 0u);
}

// ---- vhost-vdpa and idxd ---------------------------------------------------------------

TEST_F(KernelLinuxTest, VhostVdpa) {
    fake.on(uapi::kVhostVdpaGetGroupNum, [](int, void* arg) {
        *static_cast<uint32_t*>(arg) = 2;
        return 0;
    });
    fake.on(uapi::kVhostVdpaGetAsNum, [](int, void* arg) {
        *static_cast<unsigned int*>(arg) = 3;
        return 0;
    });
    auto k = kernel();
    auto fd = k.openVhostVdpa("vhost-vdpa-0");
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    ASSERT_EQ(opens.size(), 1u);
    EXPECT_EQ(opens[0].path, dev.path("vhost-vdpa-0"));
    EXPECT_EQ(opens[0].flags, O_RDWR | O_CLOEXEC);

    auto groups = k.vdpaGroupNum(fd->get());
    auto spaces = k.vdpaAsNum(fd->get());
    ASSERT_TRUE(groups.ok());
    ASSERT_TRUE(spaces.ok());
    EXPECT_EQ(*groups, 2u);
    EXPECT_EQ(*spaces, 3u);
    ASSERT_EQ(fake.calls.size(), 2u);
    EXPECT_EQ(fake.calls[0].request, uapi::kVhostVdpaGetGroupNum);
    EXPECT_EQ(fake.calls[1].request, uapi::kVhostVdpaGetAsNum);
    EXPECT_EQ(fake.calls[0].fd, fd->get());
}

TEST_F(KernelLinuxTest, VhostVdpaOnAKernelWithoutAddressSpaces) {
    auto fd = openNode("vhost-vdpa-0");
    auto k = kernel();
    auto spaces = k.vdpaAsNum(fd.get());
    ASSERT_FALSE(spaces.ok());
    EXPECT_EQ(spaces.error().err, ENOTTY);
    EXPECT_EQ(spaces.error().message, std::string("VHOST_VDPA_GET_AS_NUM on vhost-vdpa-0: ") +
                                          std::strerror(ENOTTY) +
                                          " (the running kernel lacks VHOST_VDPA_GET_AS_NUM)");
}

TEST_F(KernelLinuxTest, VhostVdpaNamesCannotLeaveTheDevRoot) {
    auto k = kernel();
    for (const char* name : {"", "vhost-vdpa-", "vhost-vdpa-x", "../vhost-vdpa-0", "iommu",
                             "vhost-vdpa-0/..", "vfio/devices/vfio3", "vhost-net"}) {
        auto fd = k.openVhostVdpa(name);
        ASSERT_FALSE(fd.ok()) << name;
        EXPECT_EQ(fd.error().err, EINVAL) << name;
    }
    EXPECT_TRUE(opens.empty());
}

TEST_F(KernelLinuxTest, OpenWorkQueue) {
    auto k = kernel();
    auto fd = k.openWorkQueue("wq0.1");
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    ASSERT_EQ(opens.size(), 1u);
    EXPECT_EQ(opens[0].path, dev.path("dsa/wq0.1"));
    EXPECT_EQ(opens[0].flags, O_RDWR | O_CLOEXEC);
    opens.clear();
    for (const char* name : {"", "wq", "wq0", "wq0.", "wq.1", "wq0.1.2", "wq0..1", "../iommu",
                             "wq0.1/../../iommu", "..", "dsa/wq0.1", "iax0.1"}) {
        auto bad = k.openWorkQueue(name);
        ASSERT_FALSE(bad.ok()) << name;
        EXPECT_EQ(bad.error().err, EINVAL) << name;
    }
    EXPECT_TRUE(opens.empty());
    EXPECT_TRUE(KernelLinux::validWorkQueueName("wq12.34"));
}

// grantNode and revokeNode on a scratch node: the real ACL, read back with libacl.
TEST_F(KernelLinuxTest, GrantAndRevokeNodeSetTheAclEntryAndItsMask) {
    auto k = kernel();
    const std::string node = k.nodePath("dsa/wq0.1");
    EXPECT_EQ(node, dev.path("dsa/wq0.1"));
    ASSERT_EQ(::chmod(node.c_str(), 0640), 0);
    constexpr uid_t kUser = 4321;
    constexpr uid_t kOther = 4242;

    // A file with no ACL of its own: the entry, and a mask of the group class.
    ASSERT_TRUE(k.grantNode(node, kUser).ok());
    test::AclEntries acl = test::aclOf(node);
    ASSERT_TRUE(acl.read);
    EXPECT_EQ(acl.users, (std::map<uid_t, std::string>{{kUser, "rw-"}})) << acl.text;
    EXPECT_EQ(acl.mask, "rw-") << acl.text;
    EXPECT_TRUE(k.grantNode(node, kUser).ok()); // again: the same
    EXPECT_EQ(test::aclOf(node).text, acl.text);
    // Taken back: the mask goes with the last named entry; the mode is as it was.
    ASSERT_TRUE(k.revokeNode(node, kUser).ok());
    acl = test::aclOf(node);
    EXPECT_TRUE(acl.users.empty()) << acl.text;
    EXPECT_FALSE(acl.mask.has_value()) << acl.text;
    struct stat st {};
    ASSERT_EQ(::stat(node.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    EXPECT_TRUE(k.revokeNode(node, kUser).ok()); // nothing to take: fine

    // Beside an entry svad did not make, under a narrow mask: that entry stays,
    // the mask lets rw through, and stays when the grant goes.
    ASSERT_TRUE(
        test::setAcl(node, "u::rw-,u:" + std::to_string(kOther) + ":r--,g::r--,m::r--,o::---"));
    ASSERT_TRUE(k.grantNode(node, kUser).ok());
    acl = test::aclOf(node);
    EXPECT_EQ(acl.users, (std::map<uid_t, std::string>{{kOther, "r--"}, {kUser, "rw-"}}))
        << acl.text;
    EXPECT_EQ(acl.mask, "rw-") << acl.text;
    ASSERT_TRUE(k.revokeNode(node, kUser).ok());
    acl = test::aclOf(node);
    EXPECT_EQ(acl.users, (std::map<uid_t, std::string>{{kOther, "r--"}})) << acl.text;
    EXPECT_TRUE(acl.mask.has_value()) << acl.text;

    // Only nodes under the dev root; a missing one is ENOENT, named.
    for (const std::string& bad :
         {std::string("/etc/passwd"), dev.root(), dev.root() + "/", dev.path("dsa/../iommu"),
          dev.path("dsa//wq0.1"), dev.path("./iommu"), std::string("dsa/wq0.1")}) {
        auto r = k.grantNode(bad, kUser);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().err, EINVAL) << bad;
        EXPECT_NE(r.error().message.find("not a node under"), std::string::npos)
            << r.error().message;
        EXPECT_EQ(k.revokeNode(bad, kUser).error().err, EINVAL) << bad;
    }
    auto missing = k.grantNode(dev.path("dsa/wq9.9"), kUser);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().err, ENOENT);
    EXPECT_NE(missing.error().message.find(dev.path("dsa/wq9.9")), std::string::npos)
        << missing.error().message;
}

TEST_F(KernelLinuxTest, DevRootWithATrailingSlash) {
    KernelLinux k(dev.root() + "//", fake.fn());
    EXPECT_EQ(k.devRoot(), dev.root());
    EXPECT_TRUE(k.openWorkQueue("wq0.1").ok());
}

// The default ioctl is the real one: on a regular file standing in for
// /dev/iommu, the kernel answers ENOTTY, and the port says so.
TEST_F(KernelLinuxTest, RealIoctlOnARegularFile) {
    KernelLinux k(dev.root());
    auto fd = k.openIommufd();
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.error().err, ENOTTY);
    EXPECT_NE(fd.error().message.find("lacks IOMMU_OPTION"), std::string::npos);
}

// ---- probe ----------------------------------------------------------------------------------

// A kernel with the whole uAPI (6.15 or later).
void modernKernel(FakeKernel& fake, std::vector<uint32_t>* destroyed, int faultFd) {
    fake.succeed(uapi::kIommuOption);
    fake.fail(uapi::kIommuGetHwInfo, ENOENT);
    fake.on(uapi::kIommuFaultQueueAlloc, [faultFd](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_fault_alloc*>(arg);
        cmd->out_fault_id = 1;
        cmd->out_fault_fd = static_cast<uint32_t>(faultFd);
        return 0;
    });
    fake.on(uapi::kIommuDestroy, [destroyed](int, void* arg) {
        destroyed->push_back(static_cast<uapi::iommu_destroy*>(arg)->id);
        return 0;
    });
}

TEST_F(KernelLinuxTest, ProbeAModernHost) {
    std::vector<uint32_t> destroyed;
    int faultFd = ::open(dev.path("iommu").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(faultFd, 0);
    modernKernel(fake, &destroyed, faultFd);
    auto k = kernel();
    auto f = k.probe();
    EXPECT_TRUE(f.iommufd);
    EXPECT_TRUE(f.rlimitMode);
    EXPECT_TRUE(f.hwInfo);
    EXPECT_TRUE(f.faultQueue);
    EXPECT_TRUE(f.vfioCdev);
    EXPECT_TRUE(f.pasidAttach);
    EXPECT_TRUE(f.vhostVdpa);
    EXPECT_TRUE(f.idxd);
    EXPECT_TRUE(f.absentReasons.empty());

    // The fault object is gone, and so is its fd.
    EXPECT_EQ(destroyed, std::vector<uint32_t>{1});
    EXPECT_EQ(::fcntl(faultFd, F_GETFD), -1);
    // RLIMIT_MODE comes before any object exists.
    ASSERT_FALSE(fake.calls.empty());
    EXPECT_EQ(fake.calls.front().request, uapi::kIommuOption);
    // Both GET_HW_INFO calls are about dev_id 0; the second sets the PASID byte.
    std::vector<uapi::iommu_hw_info> hw;
    for (const auto& c : fake.calls) {
        if (c.request == uapi::kIommuGetHwInfo) {
            hw.push_back(c.as<uapi::iommu_hw_info>());
        }
    }
    ASSERT_EQ(hw.size(), 2u);
    EXPECT_EQ(hw[0].size, 40u);
    EXPECT_EQ(hw[0].dev_id, 0u);
    EXPECT_EQ(hw[0].out_max_pasid_log2, 0u);
    EXPECT_EQ(hw[1].dev_id, 0u);
    EXPECT_NE(hw[1].out_max_pasid_log2, 0u);
    EXPECT_EQ(hw[1].reserved[0] | hw[1].reserved[1] | hw[1].reserved[2], 0);
    // One iommufd opened, and nothing else.
    ASSERT_EQ(opens.size(), 1u);
    EXPECT_EQ(opens[0].path, dev.path("iommu"));
    EXPECT_EQ(opens[0].flags, O_RDWR | O_CLOEXEC);
}

TEST_F(KernelLinuxTest, ProbeA612Kernel) {
    // GET_HW_INFO and the fault queue, but the pre-6.15 iommu_hw_info: the
    // byte that is now out_max_pasid_log2 was a reserved u32 that had to be 0.
    std::vector<uint32_t> destroyed;
    int faultFd = ::open(dev.path("iommu").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(faultFd, 0);
    modernKernel(fake, &destroyed, faultFd);
    fake.on(uapi::kIommuGetHwInfo, [](int, void* arg) {
        auto* cmd = static_cast<uapi::iommu_hw_info*>(arg);
        return cmd->out_max_pasid_log2 != 0 ? EOPNOTSUPP : ENOENT;
    });
    auto k = kernel();
    auto f = k.probe();
    EXPECT_TRUE(f.iommufd);
    EXPECT_TRUE(f.hwInfo);
    EXPECT_TRUE(f.faultQueue);
    EXPECT_TRUE(f.vfioCdev);
    EXPECT_FALSE(f.pasidAttach);
    ASSERT_EQ(f.absentReasons.size(), 1u);
    EXPECT_EQ(f.absentReasons[0].first, "pasidAttach");
    EXPECT_EQ(f.absentReasons[0].second.rfind("EOPNOTSUPP: ", 0), 0u);
    EXPECT_NE(f.absentReasons[0].second.find("6.15"), std::string::npos);
}

TEST_F(KernelLinuxTest, ProbeA612KernelWithTheNewHwInfoLayout) {
    // Debian's 6.12.117 takes the 6.15 iommu_hw_info (out_max_pasid_log2)
    // while its VFIO has no VFIO_DEVICE_ATTACH_PASID: below 6.15 the layout
    // does not make PASID attach.
    std::vector<uint32_t> destroyed;
    int faultFd = ::open(dev.path("iommu").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(faultFd, 0);
    modernKernel(fake, &destroyed, faultFd);
    release = "6.12.117";
    auto k = kernel();
    auto f = k.probe();
    EXPECT_TRUE(f.hwInfo);
    EXPECT_TRUE(f.vfioCdev);
    EXPECT_FALSE(f.pasidAttach);
    ASSERT_EQ(f.absentReasons.size(), 1u);
    EXPECT_EQ(f.absentReasons[0].first, "pasidAttach");
    EXPECT_NE(f.absentReasons[0].second.find("Linux 6.12.117 "), std::string::npos);
    EXPECT_NE(f.absentReasons[0].second.find("out_max_pasid_log2"), std::string::npos);
    EXPECT_NE(f.absentReasons[0].second.find("6.15"), std::string::npos);
}

TEST_F(KernelLinuxTest, ProbePasidAttachByRelease) {
    struct Case {
        const char* release;
        bool attach;
    };
    for (const Case& c : {Case{"6.15.0", true}, Case{"6.16.3-amd64", true}, Case{"7.0", true},
                          Case{"10.1.0-rc1", true}, Case{"6.14.11", false}, Case{"6.9.0", false},
                          Case{"5.15.0-91-generic", false}, Case{"", false},
                          Case{"six.fifteen", false}, Case{"6", false}, Case{"6.", false}}) {
        FakeKernel modern;
        std::vector<uint32_t> destroyed;
        int faultFd = ::open(dev.path("iommu").c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(faultFd, 0);
        modernKernel(modern, &destroyed, faultFd);
        const std::string release = c.release;
        KernelLinux k(dev.root(), modern.fn(), realOpen, [release] { return release; });
        auto f = k.probe();
        EXPECT_EQ(f.pasidAttach, c.attach) << c.release;
        EXPECT_EQ(reasonFor(f, "pasidAttach").empty(), c.attach) << c.release;
    }
}

TEST_F(KernelLinuxTest, ProbeA61HostWithoutPrivilege) {
    // /dev/iommu, nothing newer than 6.1, no CAP_SYS_RESOURCE, and none of
    // the other nodes.
    DevRoot old;
    old.node("iommu");
    fake.fail(uapi::kIommuOption, EPERM);
    KernelLinux k(old.root(), fake.fn());
    auto f = k.probe();
    EXPECT_TRUE(f.iommufd);
    EXPECT_FALSE(f.rlimitMode);
    EXPECT_FALSE(f.hwInfo);
    EXPECT_FALSE(f.faultQueue);
    EXPECT_FALSE(f.vfioCdev);
    EXPECT_FALSE(f.pasidAttach);
    EXPECT_FALSE(f.vhostVdpa);
    EXPECT_FALSE(f.idxd);

    EXPECT_EQ(reasonFor(f, "rlimitMode").rfind("EPERM: ", 0), 0u);
    EXPECT_NE(reasonFor(f, "rlimitMode").find("CAP_SYS_RESOURCE"), std::string::npos);
    EXPECT_EQ(reasonFor(f, "hwInfo").rfind("ENOTTY: ", 0), 0u);
    EXPECT_NE(reasonFor(f, "hwInfo").find("lacks IOMMU_GET_HW_INFO"), std::string::npos);
    EXPECT_EQ(reasonFor(f, "faultQueue").rfind("ENOTTY: ", 0), 0u);
    EXPECT_NE(reasonFor(f, "faultQueue").find("lacks IOMMU_FAULT_QUEUE_ALLOC"), std::string::npos);
    EXPECT_NE(reasonFor(f, "vfioCdev").find(old.path("vfio/devices")), std::string::npos);
    EXPECT_FALSE(reasonFor(f, "pasidAttach").empty());
    EXPECT_NE(reasonFor(f, "vhostVdpa").find("vhost-vdpa"), std::string::npos);
    EXPECT_NE(reasonFor(f, "idxd").find(old.path("dsa")), std::string::npos);
    EXPECT_EQ(f.absentReasons.size(), 7u);
    EXPECT_EQ(fake.count(uapi::kIommuDestroy), 0u);
}

TEST_F(KernelLinuxTest, ProbeWithoutIommufd) {
    DevRoot bare;
    bare.dir("vfio/devices");
    bare.node("vhost-vdpa-2");
    KernelLinux k(bare.root(), fake.fn());
    auto f = k.probe();
    EXPECT_FALSE(f.iommufd);
    EXPECT_FALSE(f.rlimitMode);
    EXPECT_FALSE(f.hwInfo);
    EXPECT_FALSE(f.faultQueue);
    EXPECT_TRUE(f.vfioCdev);
    EXPECT_FALSE(f.pasidAttach);
    EXPECT_TRUE(f.vhostVdpa);
    EXPECT_FALSE(f.idxd);
    EXPECT_EQ(reasonFor(f, "iommufd").rfind("ENOENT: ", 0), 0u);
    EXPECT_NE(reasonFor(f, "iommufd").find(bare.path("iommu")), std::string::npos);
    EXPECT_EQ(reasonFor(f, "hwInfo"), "no iommufd");
    EXPECT_EQ(reasonFor(f, "pasidAttach"), "no iommufd");
    EXPECT_TRUE(fake.calls.empty());
}

TEST_F(KernelLinuxTest, ProbeWhenTheFaultQueueFailsOtherwise) {
    std::vector<uint32_t> destroyed;
    modernKernel(fake, &destroyed, -1);
    fake.fail(uapi::kIommuFaultQueueAlloc, ENOMEM);
    auto k = kernel();
    auto f = k.probe();
    EXPECT_FALSE(f.faultQueue);
    EXPECT_EQ(reasonFor(f, "faultQueue").rfind("ENOMEM: IOMMU_FAULT_QUEUE_ALLOC on iommu: ", 0), 0u)
        << reasonFor(f, "faultQueue");
    EXPECT_TRUE(destroyed.empty());
}

} // namespace
} // namespace svad::linux_impl
