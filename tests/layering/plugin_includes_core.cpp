// Must not compile with a plugin's flags: plugins see api/ and plugins/common
// only (tests/CMakeLists.txt, Layering.*).
#include "svad/core/model.h"

#include <svad/plugin.h>
