// POSIX ACL entries on device nodes: how svad lets a context's owner open a
// node itself (an idxd work queue binds the address space of the process that
// opens it; see README.md, "Work queues"). Both Kernel implementations use it:
// linux on the real node, sim on the node file of a generated tree. Not part of
// libsvad_core (it changes files): the svad_node_acl library (libacl), linked
// by svad_linux and svad_sim.
//
// grantUser adds (or widens) the named entry user:UID:rw- of the file's
// access ACL and adds rw to the mask, so that the entry is effective (when
// the file had no mask, one is computed as the union of the group class). No
// other entry is touched. revokeUser removes that entry; when no named user
// or group entry is left, the mask goes too, and the file's group bits are its
// owning group's again. Both are idempotent.
#pragma once

#include "svad/ports/kernel.h"

#include <string>
#include <sys/types.h>

namespace svad::node_acl {

ports::Status grantUser(const std::string& path, uid_t uid);
ports::Status revokeUser(const std::string& path, uid_t uid);

// `rel` under `root` ("/" or a path without a trailing '/').
std::string underRoot(const std::string& root, const std::string& rel);
// Whether `path` names something below `root`, read as text: it begins with
// root and '/', and no component is empty, "." or "..".
bool lexicallyUnder(const std::string& root, const std::string& path);

} // namespace svad::node_acl
