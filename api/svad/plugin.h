/* svad policy plugin ABI.
 *
 * A plugin is a shared object in svad's plugin directory that exports one
 * C function, svad_plugin_init (SVAD_PLUGIN_INIT_SYMBOL). svad calls it once
 * at load time with the ABI version it speaks and a zeroed struct
 * svad_plugin of the size it knows; the plugin fills in what it knows of it
 * and sets abi_version and struct_size to what it was built with.
 *
 * Compatibility rules (what keeps an old plugin working):
 *  - Structs only grow: a field is never moved, resized or removed; new
 *    fields are appended and marked "since N".
 *  - Every struct begins with its struct_size. A reader uses a field only
 *    when struct_size covers it (SVAD_HAS_FIELD); svad does so for what a
 *    plugin fills in, a plugin must do so for what svad hands it.
 *  - svad loads a plugin whose abi_version is between 1 and
 *    SVAD_PLUGIN_ABI_VERSION, and refuses any other.
 *
 * Threading (the one statement of it; the rest of this header defers to it):
 *  - init and fini run on svad's main thread, with no other call of the
 *    plugin in flight (fini: once every queued release has run or been
 *    dropped at stop).
 *  - decide, prepare and configure run on a thread svad chooses: its main
 *    loop or one of its workers. release runs on the host's own release
 *    thread, one release at a time, in the order the contexts went away.
 *  - Calls may run concurrently with each other, on different threads:
 *    a release (which may block in restore_driver until a VMM closes its
 *    fds) alongside a decide or a prepare for another device, and a decide
 *    alongside a prepare. svad holds no lock of its own across a plugin
 *    call, so a call that blocks delays no other call.
 *  - What svad guarantees: configure never overlaps another configure; for
 *    one device, release runs only after the prepare that opened it has
 *    returned; a device whose release changes the host (host_changed) is
 *    refused before decide until that release has run.
 *  - What a plugin must do: guard the state it keeps across calls (a
 *    mutex, atomics), and never hold its own lock across a host table call
 *    that may block (bind_driver, restore_driver, the open_* calls). It
 *    calls the host table only during a call, from that call's thread.
 *  - decide should be quick (no network, no waiting on other processes);
 *    prepare and release may take as long as the kernel does.
 *
 * Strings svad hands over are NUL-terminated and live for the duration of
 * the call. Strings a plugin hands back (name, version, kinds) must live
 * until fini returns.
 */
#ifndef SVAD_PLUGIN_H
#define SVAD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* NOLINTBEGIN(readability-identifier-naming): a C ABI, named the C way */

/* The ABI this header describes.
 * 1: the first: decide, prepare, release, fini.
 * 2: svad_plugin.version and configure; svad_host.bind_driver,
 *    restore_driver and vfio_node; svad_device.iommu_group_members.
 * 3: svad_device.group_blocker_devices.
 * 4: a work queue's prepare opens nothing and hands back svad_prepared.fd -1:
 *    svad grants the context's owner access to the queue's node and the
 *    client opens it (an idxd queue binds the address space of the process
 *    that opens it: drivers/dma/idxd/cdev.c). svad_host.open_work_queue
 *    refuses. svad does not call the prepare of a plugin of ABI 1 to 3 for a
 *    queue (it could only open the queue): decide and release still run. */
#define SVAD_PLUGIN_ABI_VERSION 4u

#define SVAD_PLUGIN_INIT_SYMBOL "svad_plugin_init"

/* Put before the definition of svad_plugin_init so that it stays exported
 * when the plugin is built with -fvisibility=hidden. */
#define SVAD_PLUGIN_EXPORT __attribute__((visibility("default")))

/* True when a struct whose first member is struct_size carries FIELD. */
#define SVAD_HAS_FIELD(ptr, type, field)                                                           \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type*)0)->field))

/* Verdicts (since 1). */
enum svad_verdict {
    SVAD_IGNORE = 0, /* not mine to judge */
    SVAD_ALLOW = 1,
    SVAD_DENY = 2,
};

/* Device kinds, also used as a bit mask in svad_plugin.kinds (since 1). */
enum svad_device_kind {
    SVAD_KIND_PCI = 1u << 0,   /* a PCI function for VFIO */
    SVAD_KIND_VDPA = 1u << 1,  /* a vDPA device for vhost-vdpa */
    SVAD_KIND_QUEUE = 1u << 2, /* an idxd (SIOV) work queue */
};

/* Context modes (since 1). */
enum svad_mode {
    SVAD_MODE_HANDOFF = 1,  /* the VMM binds and attaches itself */
    SVAD_MODE_ATTACHED = 2, /* svad binds and attaches */
    /* A VM-lifetime reservation (ReserveDevices): no fd leaves svad; the VMM,
     * or libvirt for it, opens the device node itself. svad closes what
     * prepare opened at once. A plugin that does not know it may treat it as
     * handoff. */
    SVAD_MODE_RESERVED = 3,
};

/* Log priorities for svad_host.log (since 1); syslog's numbering. */
enum svad_log_priority {
    SVAD_LOG_ERR = 3,
    SVAD_LOG_WARNING = 4,
    SVAD_LOG_NOTICE = 5,
    SVAD_LOG_INFO = 6,
    SVAD_LOG_DEBUG = 7,
};

/* A key and a value, both text (since 1). */
struct svad_option {
    const char* key;
    const char* value;
};

/* One device of an allocation request, as svad discovered it (since 1).
 * Fields that do not apply to the kind are NULL, 0 or -1 as noted. */
struct svad_device {
    uint32_t struct_size;
    uint32_t kind;              /* one of enum svad_device_kind */
    const char* id;             /* PCI address, vDPA name or queue name */
    const char* driver;         /* bound driver, "" when none */
    uint16_t vendor;            /* PCI ids: of the function, or of the parent of a vDPA */
    uint16_t device;            /* device or queue (0 when there is none) */
    uint32_t class_code;        /* 24-bit PCI class */
    int32_t iommu_group;        /* -1 when none */
    int32_t group_viable;       /* 1 viable, 0 not, -1 no group */
    const char* group_blockers; /* "0000:00:1f.0 is bound to lpc_ich; ..." or "" */
    const char* vfio_node;      /* vfioN, "" when the function has no VFIO cdev */
    const char* physfn;         /* the PF of a VF, "" otherwise */
    uint32_t pasid_width;       /* usable PASID bits (a VF: its PF's), 0: none */
    const char* vhost_node;     /* vDPA: vhost-vdpa-N, "" when none */
    const char* parent;         /* vDPA and queues: the parent PCI function, "" when none */
    uint32_t queue_mode;        /* queues: 1 dedicated, 2 shared, 0 unknown */
    uint32_t queue_type;        /* queues: 1 none, 2 kernel, 3 user, 0 unknown */
    uint32_t queue_state;       /* queues: 1 disabled, 2 enabled, 3 locked, 0 unknown */
    const char* queue_node;     /* queues: dsa/wqX.Y under the dev root, "" when none
                                   (since 4: the node svad grants the owner) */
    uint32_t holders;           /* contexts that hold the device now */
    /* since 2: the group's members, NULL-terminated (NULL for a non-PCI device) */
    const char* const* iommu_group_members;
    /* since 3: the addresses of the group members that keep it from being
     * viable, NULL-terminated (NULL for a non-PCI device) */
    const char* const* group_blocker_devices;
};

/* One allocation request for one device (since 1). */
struct svad_request {
    uint32_t struct_size;
    uint32_t mode;       /* enum svad_mode */
    const char* vm;      /* the VM's name */
    uint32_t caller_uid; /* from the bus, never from the caller's words */
    int32_t caller_pid;
    const char* rule; /* the configuration rule that let it through, "" for none */
    const struct svad_device* device;
    /* the rule's options for plugins (auto_bind, shared_limit, ...) */
    const struct svad_option* options;
    size_t option_count;
};

/* What prepare hands back (since 1). */
struct svad_prepared {
    uint32_t struct_size;
    int fd;               /* the opened device, O_CLOEXEC; svad owns it from here.
                             since 4, a work queue: -1 (as svad sets it before the
                             call); the client opens the queue's node itself */
    uint32_t vdpa_groups; /* vDPA only */
    uint32_t vdpa_address_spaces;
    int host_changed; /* nonzero when prepare changed the host (a rebind) */
};

/* The host's side: svad's kernel port and services (since 1, unless noted).
 * Calls returning int give 0 or an fd on success and -errno on failure; on
 * failure err (of err_size bytes) holds a message. */
struct svad_host {
    uint32_t struct_size;
    void* handle; /* pass back as the first argument */
    void (*log)(void* handle, int priority, const char* plugin, const char* message);
    int (*open_vfio_device)(void* handle, const char* vfio_node, char* err, size_t err_size);
    int (*open_vhost_vdpa)(void* handle, const char* vhost_node, char* err, size_t err_size);
    int (*vdpa_group_num)(void* handle, int fd, uint32_t* out, char* err, size_t err_size);
    int (*vdpa_as_num)(void* handle, int fd, uint32_t* out, char* err, size_t err_size);
    /* Refused since 4 (-EOPNOTSUPP, err says why): a queue opened by svad is
     * bound to svad's address space and useless to the client. */
    int (*open_work_queue)(void* handle, const char* queue, char* err, size_t err_size);
    /* since 2: binds a PCI function to driver via driver_override; the
     * driver it had ("" for none) is written to previous. */
    int (*bind_driver)(void* handle, const char* address, const char* driver, char* previous,
                       size_t previous_size, char* err, size_t err_size);
    /* since 2: clears driver_override and gives the function back to previous
     * ("" leaves it unbound, as it was). Blocks until every open fd of the
     * function is closed, which is why release runs on the host's release
     * thread (see Threading above). */
    int (*restore_driver)(void* handle, const char* address, const char* previous, char* err,
                          size_t err_size);
    /* since 2: the function's VFIO cdev name as sysfs shows it now. */
    int (*vfio_node)(void* handle, const char* address, char* node, size_t node_size, char* err,
                     size_t err_size);
};

/* What a plugin fills in at init. */
struct svad_plugin {
    uint32_t struct_size; /* sizeof(struct svad_plugin) as the plugin was built */
    uint32_t abi_version; /* SVAD_PLUGIN_ABI_VERSION as the plugin was built */
    const char* name;     /* short and unique: "vfio" */
    uint32_t kinds;       /* mask of enum svad_device_kind it handles */
    void* state;          /* passed back to every call */

    /* since 1: the verdict for one device of a request. reason (reason_size
     * bytes) says why, for the log and the refused caller. Required. */
    int (*decide)(void* state, const struct svad_request* request, char* reason,
                  size_t reason_size);
    /* since 1: opens and prepares the device of an allowed request through
     * the host table. 0 on success, -errno otherwise (err says why).
     * Since 4 a work queue is not opened: prepare leaves out->fd at -1 (svad
     * refuses any other fd for a queue). Required. */
    int (*prepare)(void* state, const struct svad_host* host, const struct svad_request* request,
                   struct svad_prepared* out, char* err, size_t err_size);
    /* since 1: the context holding the device is gone (svad has closed its
     * fd): undo what prepare changed on the host. Optional. */
    void (*release)(void* state, const struct svad_host* host, const struct svad_request* request);
    /* since 1: unload. Optional. */
    void (*fini)(void* state);

    /* since 2: the plugin's version, for `svactl plugins`. Optional. */
    const char* version;
    /* since 2: the plugin's section of the configuration, as flat options.
     * Called after init and on each reload. 0, or -EINVAL with err. Optional. */
    int (*configure)(void* state, const struct svad_option* options, size_t option_count, char* err,
                     size_t err_size);
};

/* The entry point. host_abi_version is the ABI svad speaks; plugin points
 * to plugin_size zeroed bytes (never write past them). Returns 0, or a
 * negative errno to refuse loading (e.g. -ENOTSUP when the host is older
 * than the plugin needs). */
typedef int (*svad_plugin_init_fn)(uint32_t host_abi_version, struct svad_plugin* plugin,
                                   size_t plugin_size);

int svad_plugin_init(uint32_t host_abi_version, struct svad_plugin* plugin, size_t plugin_size);

/* NOLINTEND(readability-identifier-naming) */
#ifdef __cplusplus
}
#endif

#endif /* SVAD_PLUGIN_H */
