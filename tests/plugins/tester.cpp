// A configurable plugin for the plugin-host tests, for every device kind.
// Settings (configure): deny = a device id it denies, others = allow|ignore
// (what it says of the rest), fail_prepare = a device id whose prepare fails,
// stray_fd = a device id for which prepare hands back fd 0 and leaks what it
// opened, throw_in = decide|prepare (a C++ exception out of that call),
// configure_delay_ms = how long each later configure takes (a slow plugin).
// prepare opens queues and vDPA devices through the host like a real plugin.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <svad/plugin.h>
#include <thread>

namespace {

struct State {
    std::string deny;
    bool allowOthers = true;
    std::string failPrepare;
    std::string strayFd;
    std::string throwIn;
    std::atomic<int> released{0}; // release runs on svad's release thread
    int configureDelayMs = 0;
};

int decide(void* state, const svad_request* r, char* reason, size_t size) {
    auto* s = static_cast<State*>(state);
    if (s->throwIn == "decide") {
        throw std::runtime_error("tester throws");
    }
    if (s->deny == r->device->id) {
        (void)std::snprintf(reason, size, "tester denies %s", r->device->id);
        return SVAD_DENY;
    }
    (void)std::snprintf(reason, size, "tester %s %s", s->allowOthers ? "allows" : "ignores",
                        r->device->id);
    return s->allowOthers ? SVAD_ALLOW : SVAD_IGNORE;
}

int prepare(void* state, const svad_host* host, const svad_request* r, svad_prepared* out,
            char* err, size_t size) {
    auto* s = static_cast<State*>(state);
    if (s->throwIn == "prepare") {
        throw std::runtime_error("tester throws");
    }
    if (s->failPrepare == r->device->id) {
        (void)std::snprintf(err, size, "tester fails to prepare %s", r->device->id);
        return -EIO;
    }
    const svad_device* d = r->device;
    int fd = -ENODEV;
    if (d->kind == SVAD_KIND_QUEUE) {
        // Since ABI 4 a queue is not opened: the fd stays -1 (a stray one is refused).
        out->fd = s->strayFd == r->device->id ? 0 : -1;
        return 0;
    }
    if (d->kind == SVAD_KIND_VDPA) {
        fd = host->open_vhost_vdpa(host->handle, d->vhost_node, err, size);
    } else {
        fd = host->open_vfio_device(host->handle, d->vfio_node, err, size);
    }
    if (fd < 0) {
        return fd;
    }
    out->fd = s->strayFd == r->device->id ? 0 : fd; // stray: fd 0, and the opened one dropped
    return 0;
}

void release(void* state, const svad_host*, const svad_request*) {
    ++static_cast<State*>(state)->released;
}

int configure(void* state, const svad_option* o, size_t n, char* err, size_t size) {
    auto* s = static_cast<State*>(state);
    if (s->configureDelayMs > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(s->configureDelayMs));
    }
    State next;
    for (size_t i = 0; i < n; ++i) {
        std::string k = o[i].key;
        std::string v = o[i].value;
        if (k == "deny") {
            next.deny = v;
        } else if (k == "others") {
            if (v != "allow" && v != "ignore") {
                (void)std::snprintf(err, size, "others: expected allow or ignore");
                return -EINVAL;
            }
            next.allowOthers = v == "allow";
        } else if (k == "fail_prepare") {
            next.failPrepare = v;
        } else if (k == "stray_fd") {
            next.strayFd = v;
        } else if (k == "throw_in") {
            next.throwIn = v;
        } else if (k == "configure_delay_ms") {
            next.configureDelayMs = std::atoi(v.c_str());
        } else {
            (void)std::snprintf(err, size, "unknown setting '%s'", k.c_str());
            return -EINVAL;
        }
    }
    s->deny = next.deny;
    s->allowOthers = next.allowOthers;
    s->failPrepare = next.failPrepare;
    s->strayFd = next.strayFd;
    s->throwIn = next.throwIn;
    s->configureDelayMs = next.configureDelayMs;
    return 0;
}

void fini(void* state) {
    delete static_cast<State*>(state);
}

} // namespace

extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t, svad_plugin* p, size_t size) {
    if (size < sizeof(svad_plugin)) {
        return -ENOTSUP;
    }
    p->struct_size = sizeof(svad_plugin);
    p->abi_version = SVAD_PLUGIN_ABI_VERSION;
    p->name = "tester";
    p->kinds = SVAD_KIND_PCI | SVAD_KIND_VDPA | SVAD_KIND_QUEUE;
    p->state = new State();
    p->decide = decide;
    p->prepare = prepare;
    p->release = release;
    p->fini = fini;
    p->version = "test";
    p->configure = configure;
    return 0;
}
