// Compiles with a plugin's flags: the control for plugin_includes_core.cpp.
#include "plugin_util.h"

#include <string>
#include <svad/names.h>
#include <svad/plugin.h>
