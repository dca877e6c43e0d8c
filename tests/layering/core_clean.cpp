// Compiles with svad_core's flags: the control for the probes that must not.
#include "svad/core/engine.h"
#include "svad/names.h"

#include <string>
#include <yaml-cpp/yaml.h>
