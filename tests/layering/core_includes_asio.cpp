// Must not compile with svad_core's flags (tests/CMakeLists.txt, Layering.*).
#include "svad/core/model.h"

#include <boost/asio/io_context.hpp>
