// A sysfs tree held in memory, for the fuzz targets: files, directories and
// symbolic links decoded from bytes, served through the port discovery reads
// (ports::Sysfs) with the resolution of a real tree: links followed, "." and
// ".." walked, loops and escapes refused. The same record format is written
// by svad-fuzz-seeds from a generated tree.
//
// Records, one after another until the bytes run out (a cut record ends it):
//   'd' PATH \0                      a directory
//   'f' PATH \0 LEN(2 bytes, LE) DATA  a file of LEN bytes (fewer if cut)
//   'l' PATH \0 TARGET \0            a symbolic link
// Any other type byte is read as (byte % 3): 0 d, 1 f, 2 l.
#pragma once

#include "svad/ports/sysfs.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace svad::fuzz {

class MemSysfs final : public ports::Sysfs {
public:
    MemSysfs(const uint8_t* data, size_t size);

    ports::Read<std::string> readText(const std::string& path) const override;
    ports::Read<std::vector<uint8_t>> readBinary(const std::string& path,
                                                 size_t maxBytes) const override;
    std::optional<std::vector<std::string>> list(const std::string& path) const override;
    std::optional<std::string> readLink(const std::string& path) const override;
    bool exists(const std::string& path) const override;

    // The paths of the tree's files and of its links, sorted.
    std::vector<std::string> filePaths() const;
    std::vector<std::string> linkPaths() const;
    // Swaps the contents of the file at `path`, or the target of the link at
    // `path`, with `value` (both must exist): a second swap undoes the first.
    void swapFile(const std::string& path, std::string& value);
    void swapLink(const std::string& path, std::string& value);

    // A tree on disk (a written host's sys/) as records; links are kept, not followed.
    static std::string recordsOf(const std::string& dir);
    // Encodes one record (svad-fuzz-seeds).
    static std::string dirRecord(const std::string& path);
    static std::string fileRecord(const std::string& path, const std::string& data);
    static std::string linkRecord(const std::string& path, const std::string& target);

private:
    // The path with every link followed (the last one too unless `followLast`
    // is false); nullopt for a loop, an escape above the root or a too long walk.
    std::optional<std::string> resolve(const std::string& path, bool followLast) const;
    void addParents(const std::string& path);

    std::map<std::string, std::string> files_;
    std::map<std::string, std::string> links_;
    std::set<std::string> dirs_;
    std::map<std::string, std::set<std::string>> children_;
};

} // namespace svad::fuzz
