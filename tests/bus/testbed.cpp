#include "testbed.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <umockdev.h>

namespace svad::test {

namespace fs = std::filesystem;

struct Testbed::Impl {
    UMockdevTestbed* testbed = nullptr;
};

Testbed::Testbed() {
    const char* preload = std::getenv("LD_PRELOAD");
    if (preload == nullptr || std::strstr(preload, "libumockdev-preload") == nullptr) {
        throw std::runtime_error("the hotplug tests run under umockdev-wrapper (ctest does that); "
                                 "without it no uevent reaches svad");
    }
    impl_ = std::make_unique<Impl>();
    impl_->testbed = umockdev_testbed_new();
    gchar* root = umockdev_testbed_get_root_dir(impl_->testbed);
    root_ = root;
    g_free(root);
    // Empty, for the host generator.
    for (const auto& e : fs::directory_iterator(root_)) {
        fs::remove_all(e.path());
    }
}

Testbed::~Testbed() {
    g_object_unref(impl_->testbed);
}

void Testbed::uevent(const std::string& devpath, const std::string& action) {
    if (!fs::exists(root_ + devpath + "/uevent")) {
        throw std::runtime_error("no device at " + devpath + " in the testbed");
    }
    umockdev_testbed_uevent(impl_->testbed, devpath.c_str(), action.c_str());
}

void Testbed::replaceTree(const hostgen::HostSpec& host, const std::vector<std::string>& keep) {
    const std::string next = root_ + "/next" + std::to_string(++generation_);
    hostgen::writeTree(host, next);
    for (const auto& devpath : keep) {
        fs::path to = next + devpath;
        fs::create_directories(to.parent_path());
        fs::copy(root_ + devpath, to,
                 fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    }
    for (const char* part : {"sys", "dev"}) {
        const std::string live = root_ + "/" + part;
        const std::string old = live + ".old";
        fs::rename(live, old);
        fs::rename(next + "/" + part, live);
        fs::remove_all(old);
    }
    fs::remove_all(next);
}

std::string pciDevpath(const std::string& address, const std::string& physfn) {
    const std::string& base = physfn.empty() ? address : physfn;
    return "/sys/devices/pci" + base.substr(0, 7) + "/" + address;
}

} // namespace svad::test
