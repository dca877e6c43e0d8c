// A plugin built against the oldest plugin header (ABI 1, tests/plugins/abi_v1):
// svad must go on loading and using it. It handles work queues: allows them
// and opens them through the host, as a plugin of that time would.
#include <cstdio>
#include <svad/plugin.h>

namespace {

int decide(void* /*state*/, const svad_request* r, char* reason, size_t size) {
    (void)std::snprintf(reason, size, "legacy allows %s", r->device->id);
    return SVAD_ALLOW;
}

int prepare(void* /*state*/, const svad_host* host, const svad_request* r, svad_prepared* out,
            char* err, size_t size) {
    int fd = host->open_work_queue(host->handle, r->device->id, err, size);
    if (fd < 0) {
        return fd;
    }
    out->fd = fd;
    return 0;
}

} // namespace

extern "C" int svad_plugin_init(uint32_t /*hostAbi*/, svad_plugin* p, size_t size) {
    if (size < sizeof(svad_plugin)) {
        return -1;
    }
    p->struct_size = sizeof(svad_plugin);
    p->abi_version = SVAD_PLUGIN_ABI_VERSION; // 1 in this header
    p->name = "legacy";
    p->kinds = SVAD_KIND_QUEUE;
    p->decide = decide;
    p->prepare = prepare;
    return 0;
}
