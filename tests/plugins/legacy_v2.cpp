// A plugin built against the ABI 2 plugin header (tests/plugins/abi_v2): svad
// must go on loading and using it. It handles PCI functions: allows one whose
// group svad lists (iommu_group_members, since 2), and opens its VFIO cdev as
// sysfs names it now (vfio_node, since 2), as a plugin of that time would.
#include <cerrno>
#include <cstdio>
#include <svad/plugin.h>

namespace {

int decide(void* /*state*/, const svad_request* r, char* reason, size_t size) {
    const svad_device* d = r->device;
    if (!SVAD_HAS_FIELD(d, svad_device, iommu_group_members) || d->iommu_group_members == nullptr) {
        (void)std::snprintf(reason, size, "legacy2 sees no members of %s's group", d->id);
        return SVAD_DENY;
    }
    int members = 0;
    for (const char* const* m = d->iommu_group_members; *m != nullptr; ++m) {
        ++members;
    }
    (void)std::snprintf(reason, size, "legacy2 allows %s, in a group of %d", d->id, members);
    return SVAD_ALLOW;
}

int prepare(void* /*state*/, const svad_host* host, const svad_request* r, svad_prepared* out,
            char* err, size_t size) {
    if (!SVAD_HAS_FIELD(host, svad_host, vfio_node) || host->vfio_node == nullptr) {
        (void)std::snprintf(err, size, "legacy2 needs svad_host.vfio_node");
        return -ENOTSUP;
    }
    char node[64] = {};
    int rc = host->vfio_node(host->handle, r->device->id, node, sizeof node, err, size);
    if (rc != 0) {
        return rc;
    }
    int fd = host->open_vfio_device(host->handle, node, err, size);
    if (fd < 0) {
        return fd;
    }
    out->fd = fd;
    return 0;
}

} // namespace

extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t /*hostAbi*/, svad_plugin* p,
                                                   size_t size) {
    if (size < sizeof(svad_plugin)) {
        return -ENOTSUP;
    }
    p->struct_size = sizeof(svad_plugin);
    p->abi_version = SVAD_PLUGIN_ABI_VERSION; // 2 in this header
    p->name = "legacy2";
    p->kinds = SVAD_KIND_PCI;
    p->decide = decide;
    p->prepare = prepare;
    p->version = "2.0";
    return 0;
}
