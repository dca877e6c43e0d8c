// Forced in front of every source of the layers that must not reach D-Bus,
// Asio, udev or systemd (svad/core, svad/sim, svad/ports' helpers and the
// plugins; see CMakeLists.txt, svad_fence). Those headers live in the system's
// include directory, which no per-target include path can take away, so their
// namespaces and handle types are poisoned here: including one of them, or
// using one of these names, is a compile error ("attempt to use poisoned").
// Write these names in comments only.
#pragma once

// sdbus-c++ (namespace sdbus), Boost.Asio (namespace boost::asio), libudev
// (struct udev), libsystemd (sd-bus, sd-journal, sd-daemon, sd-event, sd-device).
#pragma GCC poison sdbus asio udev sd_bus sd_journal sd_notify sd_event sd_device
