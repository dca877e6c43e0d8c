// Must not compile with svad_core's flags: the generated adaptors are not on
// core's include path (tests/CMakeLists.txt, Layering.*).
#include "svad/core/model.h"
#include "svad/dbus/Manager_adaptor.h"
