// svad's idxd plugin: Intel SIOV work queues (DSA/IAA). Only enabled
// user-type queues with a character device are handed out. A dedicated queue
// goes to one context at a time; a shared queue to several, up to a limit:
// the matching rule's shared_limit, else plugins.idxd.shared_limit, else 8.
//
// It opens nothing (plugin ABI 4): the kernel binds a queue to the address
// space of the process that opens it, so svad grants the context's owner the
// queue's node and the client opens it (README.md).
//
// Settings (plugins.idxd in svad.yaml):
//   shared_limit: N    contexts one shared queue may serve at once (default 8)
#include "plugin_util.h"

#include <atomic>
#include <string>
#include <svad/plugin.h>

namespace {

using svad::plugins::option;
using svad::plugins::say;
using svad::plugins::smallNumber;
using svad::plugins::text;

constexpr long kDefaultSharedLimit = 8;

// configure may overlap a decide (api/svad/plugin.h).
struct State {
    std::atomic<long> sharedLimit{kDefaultSharedLimit};
};

int decide(void* state, const svad_request* r, char* reason, size_t size) {
    auto* s = static_cast<State*>(state);
    const svad_device* d = r->device;
    if (d == nullptr || d->kind != SVAD_KIND_QUEUE) {
        return SVAD_IGNORE;
    }
    const std::string id = text(d->id);
    if (d->queue_type != 3) {
        say(reason, size, id + " is not a user work queue (type must be user)");
        return SVAD_DENY;
    }
    if (d->queue_state != 2) {
        say(reason, size, id + " is not enabled");
        return SVAD_DENY;
    }
    if (text(d->queue_node).empty()) {
        say(reason, size, id + " has no character device");
        return SVAD_DENY;
    }
    if (d->queue_mode == 1) {
        if (d->holders > 0) {
            say(reason, size, id + " is a dedicated queue and already held");
            return SVAD_DENY;
        }
        say(reason, size, "dedicated queue " + id);
        return SVAD_ALLOW;
    }
    if (d->queue_mode == 2) {
        long limit = smallNumber(option(r, "shared_limit", ""));
        if (limit < 0) {
            limit = s->sharedLimit;
        }
        if (static_cast<long>(d->holders) >= limit) {
            say(reason, size,
                "shared queue " + id + " already serves " + std::to_string(d->holders) +
                    " contexts (shared_limit " + std::to_string(limit) + ")");
            return SVAD_DENY;
        }
        say(reason, size,
            "shared queue " + id + ", context " + std::to_string(d->holders + 1) + " of " +
                std::to_string(limit));
        return SVAD_ALLOW;
    }
    say(reason, size, id + " has an unknown mode");
    return SVAD_DENY;
}

// Nothing to open or change: out->fd stays -1, and svad grants the node.
int prepare(void* /*state*/, const svad_host* /*host*/, const svad_request* /*r*/,
            svad_prepared* /*out*/, char* /*err*/, size_t /*size*/) {
    return 0;
}

int configure(void* state, const svad_option* options, size_t count, char* err, size_t size) {
    auto* s = static_cast<State*>(state);
    long limit = kDefaultSharedLimit;
    for (size_t i = 0; i < count; ++i) {
        std::string key = text(options[i].key);
        std::string value = text(options[i].value);
        if (key == "shared_limit") {
            limit = smallNumber(value);
            if (limit < 1) {
                say(err, size, "shared_limit: expected a whole number from 1, not '" + value + "'");
                return -EINVAL;
            }
        } else {
            say(err, size, "unknown setting '" + key + "' (the idxd plugin knows shared_limit)");
            return -EINVAL;
        }
    }
    s->sharedLimit = limit;
    return 0;
}

} // namespace

extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t hostAbi, svad_plugin* p, size_t size) {
    // A host before ABI 4 expects prepare to open the queue.
    if (hostAbi < 4 || !svad::plugins::fillTable<State>(p, size, "idxd", SVAD_KIND_QUEUE)) {
        return -ENOTSUP; // a host older than this plugin's header
    }
    p->decide = decide;
    p->prepare = prepare;
    p->configure = configure;
    return 0;
}
