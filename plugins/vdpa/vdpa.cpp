// svad's vDPA plugin: vDPA devices bound to vhost_vdpa. It opens
// /dev/vhost-vdpa-N through the host and reports the device's virtqueue
// groups and address spaces.
#include "plugin_util.h"

#include <svad/plugin.h>

namespace {

using svad::plugins::say;
using svad::plugins::text;

int decide(void* /*state*/, const svad_request* r, char* reason, size_t size) {
    const svad_device* d = r->device;
    if (d == nullptr || d->kind != SVAD_KIND_VDPA) {
        return SVAD_IGNORE;
    }
    const std::string driver = text(d->driver);
    if (driver != "vhost_vdpa") {
        say(reason, size,
            text(d->id) + " is bound to " + (driver.empty() ? std::string("no driver") : driver) +
                ", not vhost_vdpa (vdpa dev add ... then bind it to vhost_vdpa)");
        return SVAD_DENY;
    }
    if (text(d->vhost_node).empty()) {
        say(reason, size, text(d->id) + " is bound to vhost_vdpa but has no vhost-vdpa node");
        return SVAD_DENY;
    }
    say(reason, size, text(d->id) + " on " + text(d->vhost_node));
    return SVAD_ALLOW;
}

int prepare(void* /*state*/, const svad_host* host, const svad_request* r, svad_prepared* out,
            char* err, size_t size) {
    const svad_device* d = r->device;
    int fd = host->open_vhost_vdpa(host->handle, d->vhost_node, err, size);
    if (fd < 0) {
        return fd;
    }
    uint32_t groups = 0;
    uint32_t spaces = 0;
    int rc = host->vdpa_group_num(host->handle, fd, &groups, err, size);
    if (rc == 0) {
        rc = host->vdpa_as_num(host->handle, fd, &spaces, err, size);
    }
    if (rc != 0) {
        (void)::close(fd);
        return rc;
    }
    out->fd = fd;
    out->vdpa_groups = groups;
    out->vdpa_address_spaces = spaces;
    return 0;
}

} // namespace

extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t /*hostAbi*/, svad_plugin* p,
                                                   size_t size) {
    if (!svad::plugins::fillTable<void>(p, size, "vdpa", SVAD_KIND_VDPA)) {
        return -ENOTSUP; // a host older than this plugin's header
    }
    p->decide = decide;
    p->prepare = prepare;
    return 0;
}
