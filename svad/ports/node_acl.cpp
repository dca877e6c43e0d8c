#include "svad/ports/node_acl.h"

#include <acl/libacl.h>
#include <cerrno>
#include <cstring>
#include <memory>
#include <sys/acl.h>
#include <type_traits>

namespace svad::node_acl {

namespace {

using ports::KernelError;
using ports::Status;

struct AclFree {
    void operator()(void* p) const { acl_free(p); }
};
using Acl = std::unique_ptr<std::remove_pointer_t<acl_t>, AclFree>;

KernelError errnoError(int err, const std::string& what) {
    return KernelError{err, what + ": " + std::strerror(err)};
}

std::string entryText(uid_t uid) {
    return "user:" + std::to_string(uid) + ":rw-";
}

// The named user entry of `uid`, if the ACL has one.
bool findUser(acl_t acl, uid_t uid, acl_entry_t* out) {
    acl_entry_t e = nullptr;
    for (int r = acl_get_entry(acl, ACL_FIRST_ENTRY, &e); r == 1;
         r = acl_get_entry(acl, ACL_NEXT_ENTRY, &e)) {
        acl_tag_t tag = ACL_UNDEFINED_TAG;
        if (acl_get_tag_type(e, &tag) != 0 || tag != ACL_USER) {
            continue;
        }
        void* q = acl_get_qualifier(e);
        const bool match = q != nullptr && *static_cast<uid_t*>(q) == uid;
        acl_free(q);
        if (match) {
            *out = e;
            return true;
        }
    }
    return false;
}

// The entry with `tag`, and how many named (user or group) entries there are.
acl_entry_t findTag(acl_t acl, acl_tag_t want, int* named) {
    acl_entry_t found = nullptr;
    acl_entry_t e = nullptr;
    *named = 0;
    for (int r = acl_get_entry(acl, ACL_FIRST_ENTRY, &e); r == 1;
         r = acl_get_entry(acl, ACL_NEXT_ENTRY, &e)) {
        acl_tag_t tag = ACL_UNDEFINED_TAG;
        if (acl_get_tag_type(e, &tag) != 0) {
            continue;
        }
        if (tag == want) {
            found = e;
        }
        *named += tag == ACL_USER || tag == ACL_GROUP ? 1 : 0;
    }
    return found;
}

bool addReadWrite(acl_entry_t e) {
    acl_permset_t ps = nullptr;
    return acl_get_permset(e, &ps) == 0 && acl_add_perm(ps, ACL_READ) == 0 &&
           acl_add_perm(ps, ACL_WRITE) == 0 && acl_set_permset(e, ps) == 0;
}

Status write(const std::string& path, acl_t acl, const std::string& what) {
    if (acl_valid(acl) != 0) {
        return errnoError(EINVAL, what + " on " + path + ": the ACL would not be valid");
    }
    if (acl_set_file(path.c_str(), ACL_TYPE_ACCESS, acl) != 0) {
        return errnoError(errno, what + " on " + path);
    }
    return ports::okStatus();
}

} // namespace

Status grantUser(const std::string& path, uid_t uid) {
    const std::string what = "add the ACL entry " + entryText(uid);
    // acl_create_entry and acl_calc_mask take the ACL by address and may
    // replace it: the guard frees whatever `raw` is at the end.
    acl_t raw = acl_get_file(path.c_str(), ACL_TYPE_ACCESS);
    if (raw == nullptr) {
        return errnoError(errno, "read the ACL of " + path);
    }
    struct Guard {
        acl_t* acl;
        ~Guard() { acl_free(*acl); }
    } guard{&raw};
    acl_entry_t user = nullptr;
    if (!findUser(raw, uid, &user)) {
        if (acl_create_entry(&raw, &user) != 0 || acl_set_tag_type(user, ACL_USER) != 0 ||
            acl_set_qualifier(user, &uid) != 0) {
            return errnoError(errno, what + " on " + path);
        }
    }
    if (!addReadWrite(user)) {
        return errnoError(errno, what + " on " + path);
    }
    int named = 0;
    if (acl_entry_t mask = findTag(raw, ACL_MASK, &named); mask != nullptr) {
        if (!addReadWrite(mask)) {
            return errnoError(errno, what + " on " + path + " (its mask)");
        }
    } else if (acl_calc_mask(&raw) != 0) {
        return errnoError(errno, what + " on " + path + " (its mask)");
    }
    return write(path, raw, what);
}

Status revokeUser(const std::string& path, uid_t uid) {
    const std::string what = "remove the ACL entry of user " + std::to_string(uid);
    Acl acl(acl_get_file(path.c_str(), ACL_TYPE_ACCESS));
    if (!acl) {
        return errnoError(errno, "read the ACL of " + path);
    }
    acl_entry_t user = nullptr;
    if (!findUser(acl.get(), uid, &user)) {
        return ports::okStatus();
    }
    if (acl_delete_entry(acl.get(), user) != 0) {
        return errnoError(errno, what + " on " + path);
    }
    int named = 0;
    if (acl_entry_t mask = findTag(acl.get(), ACL_MASK, &named); mask != nullptr && named == 0) {
        if (acl_delete_entry(acl.get(), mask) != 0) {
            return errnoError(errno, what + " on " + path + " (its mask)");
        }
    }
    return write(path, acl.get(), what);
}

std::string underRoot(const std::string& root, const std::string& rel) {
    return (root == "/" || root.empty() ? "" : root) + "/" + rel;
}

bool lexicallyUnder(const std::string& root, const std::string& path) {
    const std::string prefix = root == "/" || root.empty() ? "/" : root + "/";
    if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) {
        return false;
    }
    size_t start = prefix.size();
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) {
            end = path.size();
        }
        const std::string part = path.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") {
            return false;
        }
        start = end + 1;
    }
    return true;
}

} // namespace svad::node_acl
