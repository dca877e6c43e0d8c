// Deliberately bad plugins, one per build (BAD_KIND picks which): svad must
// refuse each with a reason and go on.
#include <cerrno>
#include <svad/plugin.h>

namespace {

int decide(void*, const svad_request*, char*, size_t) {
    return SVAD_ALLOW;
}
int prepare(void*, const svad_host*, const svad_request*, svad_prepared*, char*, size_t) {
    return -EIO;
}

void fill(svad_plugin* p, const char* name) {
    p->struct_size = sizeof(svad_plugin);
    p->abi_version = SVAD_PLUGIN_ABI_VERSION;
    p->name = name;
    p->kinds = SVAD_KIND_QUEUE;
    p->decide = decide;
    p->prepare = prepare;
}

} // namespace

#if BAD_KIND == 1 // an ABI from the future
extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t, svad_plugin* p, size_t) {
    fill(p, "future");
    p->abi_version = 99;
    return 0;
}
#elif BAD_KIND == 2 // no entry point under the ABI's name
extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_start(uint32_t, svad_plugin* p, size_t) {
    fill(p, "nameless");
    return 0;
}
#elif BAD_KIND == 3 // a required function left out
extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t, svad_plugin* p, size_t) {
    fill(p, "nodecide");
    p->decide = nullptr;
    return 0;
}
#elif BAD_KIND == 4 // init refuses
extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t, svad_plugin* p, size_t) {
    fill(p, "refuser");
    return -EPERM;
}
#elif BAD_KIND == 5 // a struct smaller than ABI 1's
extern "C" SVAD_PLUGIN_EXPORT int svad_plugin_init(uint32_t, svad_plugin* p, size_t) {
    fill(p, "tiny");
    p->struct_size = 8;
    return 0;
}
#endif
