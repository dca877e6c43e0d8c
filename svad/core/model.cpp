#include "svad/core/model.h"

namespace svad::core {

std::string blockerText(const GroupBlocker& b) {
    return b.device + " is bound to " + b.driver;
}

} // namespace svad::core
