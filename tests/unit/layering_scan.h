// The include rules of svad's layers, checked on the sources (test_layering.cpp).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace svad::layering {

// One layer: the directories (relative to the source root) whose .cpp and .h
// files it owns, and what they may include.
struct Layer {
    std::string name;
    std::vector<std::string> dirs;
    // Includes (the text between <> or "") that are refused, by prefix or
    // by substring ("*_adaptor.h" style names are caught by substring).
    std::vector<std::string> forbiddenPrefixes;
    std::vector<std::string> forbiddenSubstrings;
    // When true, only these are allowed: the standard library and the C/POSIX
    // headers (<name>, <name.h>, <sys/..>, <linux/..>, <arpa/..>, <netinet/..>),
    // and the names in `allowed`.
    bool allowListOnly = false;
    std::vector<std::string> allowed;
};

// svad's layers: core and ports, sim, plugins.
std::vector<Layer> svadLayers();

// Every include under `root` that breaks a layer's rules, as "FILE:LINE: <what>
// (layer: why)". Empty when the tree keeps to them.
std::vector<std::string> violations(const std::filesystem::path& root,
                                    const std::vector<Layer>& layers);

} // namespace svad::layering
