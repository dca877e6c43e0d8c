// svad-fuzz-seeds OUT PCI_DUMPS CONFIG_DIR: writes the seed corpora of the
// fuzz targets under OUT/<target>/: each real dump's configuration spaces,
// VT-d registers of the sample hosts, generated sysfs trees in mem_sysfs.h's
// record format, and the configuration and host YAML files as they are.
#include "mem_sysfs.h"
#include "svad/hostgen/hostgen.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string readFile(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// A written tree's sysfs part as records (links are not followed).
std::string records(const fs::path& sys) {
    std::string out;
    for (auto it = fs::recursive_directory_iterator(sys); it != fs::recursive_directory_iterator();
         ++it) {
        const std::string rel = fs::relative(it->path(), sys).string();
        if (it->is_symlink()) {
            out += svad::fuzz::MemSysfs::linkRecord(rel, fs::read_symlink(it->path()).string());
        } else if (it->is_directory()) {
            out += svad::fuzz::MemSysfs::dirRecord(rel);
        } else if (it->is_regular_file()) {
            out += svad::fuzz::MemSysfs::fileRecord(rel, readFile(it->path()));
        }
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: svad-fuzz-seeds OUT PCI_DUMPS CONFIG_DIR\n";
        return 2;
    }
    const fs::path out = argv[1];
    const fs::path dumps = argv[2];
    const fs::path config = argv[3];
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dumps)) {
        if (!e.is_regular_file() || e.path().extension() == ".md") {
            continue;
        }
        size_t i = 0;
        for (const auto& d : svad::hostgen::readLspciDump(e.path().string())) {
            write(out / "pci_config", e.path().filename().string() + "-" + std::to_string(i++),
                  std::string(d.config.begin(), d.config.end()));
            ++n;
        }
    }
    for (const auto& e : fs::recursive_directory_iterator(config)) {
        if (e.path().extension() != ".yaml") {
            continue;
        }
        const bool host = e.path().parent_path().filename() == "hosts";
        write(out / (host ? "hostgen_yaml" : "config"), e.path().filename().string(),
              readFile(e.path()));
        ++n;
        if (!host) {
            continue;
        }
        const svad::hostgen::HostSpec spec = svad::hostgen::loadHostYaml(e.path().string());
        for (const auto& u : spec.units) {
            std::string regs(16, '\0');
            for (int b = 0; b < 8; ++b) {
                regs[b] = static_cast<char>((u.cap >> (8 * b)) & 0xffU);
                regs[8 + b] = static_cast<char>((u.ecap >> (8 * b)) & 0xffU);
            }
            write(out / "vtd", u.name, regs);
            ++n;
        }
    }
    // Generated trees: a small synthetic host and the sample hosts' shapes.
    const fs::path scratch =
        fs::temp_directory_path() / ("svad-fuzz-seeds-" + std::to_string(::getpid()));
    for (uint32_t functions : {8U, 24U}) {
        fs::remove_all(scratch);
        svad::hostgen::writeTree(svad::hostgen::synthesize(functions, functions), scratch.string());
        write(out / "sysfs", "synth-" + std::to_string(functions), records(scratch / "sys"));
        ++n;
    }
    fs::remove_all(scratch);
    std::cout << "svad-fuzz-seeds: " << n << " seeds under " << out.string() << "\n";
    return 0;
}
