#include "mem_sysfs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace svad::fuzz {

namespace {

constexpr size_t kMaxPath = 4096;
constexpr int kMaxHops = 40; // as the kernel's MAXSYMLINKS
constexpr size_t kMaxText = 4096;

std::vector<std::string> split(const std::string& path) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) {
            end = path.size();
        }
        if (end > start) {
            out.push_back(path.substr(start, end - start));
        }
        start = end + 1;
    }
    return out;
}

std::string join(const std::vector<std::string>& parts, size_t n) {
    std::string out;
    for (size_t i = 0; i < n && i < parts.size(); ++i) {
        out += (i > 0 ? "/" : "") + parts[i];
    }
    return out;
}

// A string until the next \0 (or the end); `pos` goes past the \0.
std::string cString(const uint8_t* data, size_t size, size_t& pos) {
    std::string out;
    while (pos < size && data[pos] != 0 && out.size() < kMaxPath) {
        out += static_cast<char>(data[pos++]);
    }
    if (pos < size) {
        ++pos;
    }
    return out;
}

// The keys of a map of paths, in order.
std::vector<std::string> keysOf(const std::map<std::string, std::string>& m) {
    std::vector<std::string> out;
    out.reserve(m.size());
    for (const auto& [key, value] : m) {
        out.push_back(key);
    }
    return out;
}

} // namespace

MemSysfs::MemSysfs(const uint8_t* data, size_t size) {
    dirs_.insert("");
    size_t pos = 0;
    while (pos < size) {
        const uint8_t type = data[pos++];
        const int kind = type == 'd' ? 0 : type == 'f' ? 1 : type == 'l' ? 2 : type % 3;
        std::string path = join(split(cString(data, size, pos)), SIZE_MAX);
        if (path.empty()) {
            continue;
        }
        addParents(path);
        if (kind == 0) {
            dirs_.insert(path);
        } else if (kind == 1) {
            size_t len = 0;
            if (pos + 2 <= size) {
                len = static_cast<size_t>(data[pos]) | static_cast<size_t>(data[pos + 1]) << 8U;
                pos += 2;
            } else {
                pos = size;
            }
            len = std::min(len, size - pos);
            files_[path] = std::string(reinterpret_cast<const char*>(data + pos), len);
            pos += len;
        } else {
            links_[path] = cString(data, size, pos);
        }
    }
}

void MemSysfs::addParents(const std::string& path) {
    const auto parts = split(path);
    // From the entry up: once a parent has the child already, every level above it
    // was added with it.
    for (size_t i = parts.size(); i-- > 0;) {
        const std::string parent = join(parts, i);
        if (!children_[parent].insert(parts[i]).second) {
            break;
        }
        if (i > 0) {
            dirs_.insert(parent);
        }
    }
}

std::vector<std::string> MemSysfs::filePaths() const {
    return keysOf(files_);
}

std::vector<std::string> MemSysfs::linkPaths() const {
    return keysOf(links_);
}

void MemSysfs::swapFile(const std::string& path, std::string& value) {
    files_.at(path).swap(value);
}

void MemSysfs::swapLink(const std::string& path, std::string& value) {
    links_.at(path).swap(value);
}

std::string MemSysfs::recordsOf(const std::string& dir) {
    namespace fs = std::filesystem;
    std::string out;
    for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
         ++it) {
        const std::string rel = fs::relative(it->path(), dir).string();
        if (it->is_symlink()) {
            out += linkRecord(rel, fs::read_symlink(it->path()).string());
        } else if (it->is_directory()) {
            out += dirRecord(rel);
        } else if (it->is_regular_file()) {
            std::ifstream in(it->path(), std::ios::binary);
            std::ostringstream data;
            data << in.rdbuf();
            out += fileRecord(rel, data.str());
        }
    }
    return out;
}

std::optional<std::string> MemSysfs::resolve(const std::string& path, bool followLast) const {
    std::vector<std::string> todo = split(path);
    std::reverse(todo.begin(), todo.end());
    // The components walked so far, joined by '/', and where each one starts.
    std::string done;
    std::vector<size_t> starts;
    auto drop = [&done, &starts] {
        done.resize(starts.back() == 0 ? 0 : starts.back() - 1);
        starts.pop_back();
    };
    int hops = 0;
    while (!todo.empty()) {
        std::string c = std::move(todo.back());
        todo.pop_back();
        if (c == ".") {
            continue;
        }
        if (c == "..") {
            if (starts.empty()) {
                return std::nullopt; // above the root: RESOLVE_BENEATH refuses it
            }
            drop();
            continue;
        }
        starts.push_back(done.empty() ? 0 : done.size() + 1);
        if (!done.empty()) {
            done += '/';
        }
        done += c;
        const bool last = todo.empty();
        auto link = links_.find(done);
        if (link == links_.end() || (last && !followLast)) {
            continue;
        }
        if (++hops > kMaxHops || link->second.empty() || link->second[0] == '/') {
            return std::nullopt; // a loop, or an absolute link: out of the root
        }
        drop();
        auto target = split(link->second);
        for (auto it = target.rbegin(); it != target.rend(); ++it) {
            todo.push_back(*it);
        }
        if (todo.size() > kMaxPath) {
            return std::nullopt;
        }
    }
    return done;
}

ports::Read<std::vector<uint8_t>> MemSysfs::readBinary(const std::string& path,
                                                       size_t maxBytes) const {
    auto real = resolve(path, true);
    if (!real) {
        return {std::nullopt, "a link leading outside the sysfs root: not read"};
    }
    auto it = files_.find(*real);
    if (it == files_.end()) {
        if (dirs_.count(*real) != 0) {
            return {std::nullopt, "a directory, not a regular file: not read"};
        }
        return std::nullopt;
    }
    std::vector<uint8_t> out(it->second.begin(), it->second.end());
    if (out.size() > maxBytes) {
        out.resize(maxBytes);
        return {std::move(out), "cut at " + std::to_string(maxBytes) + " bytes"};
    }
    return out;
}

ports::Read<std::string> MemSysfs::readText(const std::string& path) const {
    auto bytes = readBinary(path, kMaxText);
    if (!bytes) {
        return {std::nullopt, bytes.note};
    }
    std::string s(bytes->begin(), bytes->end());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) {
        s.pop_back();
    }
    return {std::move(s), bytes.note};
}

std::optional<std::vector<std::string>> MemSysfs::list(const std::string& path) const {
    auto real = resolve(path, true);
    if (!real || dirs_.count(*real) == 0) {
        return std::nullopt;
    }
    auto it = children_.find(*real);
    if (it == children_.end()) {
        return std::vector<std::string>{};
    }
    return std::vector<std::string>(it->second.begin(), it->second.end());
}

std::optional<std::string> MemSysfs::readLink(const std::string& path) const {
    auto real = resolve(path, false);
    if (!real) {
        return std::nullopt;
    }
    auto it = links_.find(*real);
    if (it == links_.end()) {
        return std::nullopt;
    }
    return it->second;
}

bool MemSysfs::exists(const std::string& path) const {
    auto real = resolve(path, true);
    return real && (files_.count(*real) != 0 || dirs_.count(*real) != 0);
}

std::string MemSysfs::dirRecord(const std::string& path) {
    return "d" + path + std::string(1, '\0');
}

std::string MemSysfs::fileRecord(const std::string& path, const std::string& data) {
    const size_t len = std::min<size_t>(data.size(), 0xffff);
    std::string out = "f" + path + std::string(1, '\0');
    out += static_cast<char>(len & 0xffU);
    out += static_cast<char>((len >> 8U) & 0xffU);
    return out + data.substr(0, len);
}

std::string MemSysfs::linkRecord(const std::string& path, const std::string& target) {
    return "l" + path + std::string(1, '\0') + target + std::string(1, '\0');
}

} // namespace svad::fuzz
