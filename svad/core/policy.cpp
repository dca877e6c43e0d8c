#include "svad/core/policy.h"

namespace svad::core {

const char* toString(Verdict v) {
    switch (v) {
    case Verdict::Allow:
        return "ALLOW";
    case Verdict::Deny:
        return "DENY";
    case Verdict::Ignore:
        return "IGNORE";
    }
    return "IGNORE";
}

} // namespace svad::core
