// Every sysfs attribute parser, at speed: one small generated host's tree,
// made once, whose files and links the bytes change before each discovery
// (fuzz_sysfs, which decodes a whole tree from the bytes, also changes the
// tree's shape, and runs a few hundred times a second).
//
// The bytes are records, one after another until they run out:
//   SELECTOR INDEX(2 bytes, LE) ...
// An even SELECTOR changes a file: INDEX (modulo the number of files, in path
// order) picks it, then LEN(2 bytes, LE) DATA are its new contents. An odd one
// changes a link: INDEX picks it, then TARGET up to \0 is where it leads.
// Every change is undone after the discovery.
#include "mem_sysfs.h"
#include "svad/core/discovery.h"
#include "svad/hostgen/hostgen.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

struct Base {
    svad::fuzz::MemSysfs tree;
    std::vector<std::string> files;
    std::vector<std::string> links;
};

Base& base() {
    static Base b = [] {
        namespace fs = std::filesystem;
        const fs::path dir =
            fs::temp_directory_path() / ("svad-fuzz-attrs-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        // 8 functions: PASID devices, an SR-IOV PF with VFs, DSA queues and vDPA.
        svad::hostgen::writeTree(svad::hostgen::synthesize(8), dir.string());
        const std::string records = svad::fuzz::MemSysfs::recordsOf((dir / "sys").string());
        fs::remove_all(dir);
        svad::fuzz::MemSysfs tree(reinterpret_cast<const uint8_t*>(records.data()), records.size());
        auto files = tree.filePaths();
        auto links = tree.linkPaths();
        if (files.empty() || links.empty()) {
            std::abort(); // the generator wrote no tree: nothing would be fuzzed
        }
        return Base{std::move(tree), std::move(files), std::move(links)};
    }();
    return b;
}

uint16_t u16(const uint8_t* data, size_t size, size_t& pos) {
    uint16_t v = 0;
    if (pos < size) {
        v = data[pos++];
    }
    if (pos < size) {
        v = static_cast<uint16_t>(v | data[pos++] << 8U);
    }
    return v;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Base& b = base();
    struct Change {
        bool file;
        const std::string* path;
        std::string value; // the original, once swapped in
    };
    std::vector<Change> changes;
    size_t pos = 0;
    while (pos < size) {
        const bool file = data[pos++] % 2 == 0;
        const uint16_t index = u16(data, size, pos);
        std::string value;
        if (file) {
            const size_t len = std::min<size_t>(u16(data, size, pos), size - pos);
            value.assign(reinterpret_cast<const char*>(data + pos), len);
            pos += len;
        } else {
            while (pos < size && data[pos] != 0) {
                value += static_cast<char>(data[pos++]);
            }
            pos += pos < size ? 1 : 0;
        }
        const auto& paths = file ? b.files : b.links;
        const std::string& path = paths[index % paths.size()];
        if (file) {
            b.tree.swapFile(path, value);
        } else {
            b.tree.swapLink(path, value);
        }
        changes.push_back({file, &path, std::move(value)});
    }
    (void)svad::core::discover(b.tree);
    // Undone in reverse: a path changed twice gets its first value back.
    for (auto it = changes.rbegin(); it != changes.rend(); ++it) {
        if (it->file) {
            b.tree.swapFile(*it->path, it->value);
        } else {
            b.tree.swapLink(*it->path, it->value);
        }
    }
    return 0;
}
