// A file's access ACL as the tests read it: with libacl (acl_get_file), on
// files of a test's own tree only (never the machine's /dev or /sys).
#pragma once

#include <acl/libacl.h>
#include <map>
#include <optional>
#include <string>
#include <sys/acl.h>
#include <sys/types.h>

namespace svad::test {

struct AclEntries {
    bool read = false;                  // acl_get_file succeeded
    std::map<uid_t, std::string> users; // named user entries: uid -> "rw-"
    std::optional<std::string> mask;    // "rw-", when there is a mask
    std::string text;                   // the whole ACL, for messages
};

inline std::string permText(acl_entry_t e) {
    acl_permset_t ps = nullptr;
    if (acl_get_permset(e, &ps) != 0) {
        return "???";
    }
    return std::string(acl_get_perm(ps, ACL_READ) == 1 ? "r" : "-") +
           (acl_get_perm(ps, ACL_WRITE) == 1 ? "w" : "-") +
           (acl_get_perm(ps, ACL_EXECUTE) == 1 ? "x" : "-");
}

inline AclEntries aclOf(const std::string& path) {
    AclEntries out;
    acl_t acl = acl_get_file(path.c_str(), ACL_TYPE_ACCESS);
    if (acl == nullptr) {
        return out;
    }
    out.read = true;
    acl_entry_t e = nullptr;
    for (int r = acl_get_entry(acl, ACL_FIRST_ENTRY, &e); r == 1;
         r = acl_get_entry(acl, ACL_NEXT_ENTRY, &e)) {
        acl_tag_t tag = ACL_UNDEFINED_TAG;
        (void)acl_get_tag_type(e, &tag);
        if (tag == ACL_USER) {
            void* q = acl_get_qualifier(e);
            if (q != nullptr) {
                out.users[*static_cast<uid_t*>(q)] = permText(e);
                acl_free(q);
            }
        } else if (tag == ACL_MASK) {
            out.mask = permText(e);
        }
    }
    if (char* t = acl_to_text(acl, nullptr)) {
        out.text = t;
        acl_free(t);
    }
    acl_free(acl);
    return out;
}

// Sets the access ACL from its text form ("u::rw-,u:4242:r--,g::---,m::r--,o::---").
inline bool setAcl(const std::string& path, const std::string& text) {
    acl_t acl = acl_from_text(text.c_str());
    if (acl == nullptr) {
        return false;
    }
    const bool ok = acl_set_file(path.c_str(), ACL_TYPE_ACCESS, acl) == 0;
    acl_free(acl);
    return ok;
}

} // namespace svad::test
