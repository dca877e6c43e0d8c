// svad-fuzz-seeds OUT PCI_DUMPS CONFIG_DIR: writes the seed corpora of the
// fuzz targets under OUT/<target>/: each real dump's configuration spaces,
// VT-d registers of the sample hosts, generated sysfs trees in mem_sysfs.h's
// record format, the configuration and host YAML files as they are, and the
// D-Bus argument dictionaries in dbus_args_bytes.h's layout.
#include "dbus_args_bytes.h"
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

// The D-Bus arguments: each known key once with a value of its type and once
// with a value of another, and a few whole dictionaries.
size_t writeDbusArgsSeeds(const fs::path& dir) {
    using namespace svad::fuzz::dbus_args;
    size_t n = 0;
    auto one = [&dir, &n](const std::string& name, const Writer& w) {
        write(dir, name, w.bytes());
        ++n;
    };
    using Write = void (*)(Writer&);
    struct Key {
        KeySet set;
        const char* name;
        Write good;
        Write wrong;
    };
    const Key keys[] = {
        {KeySet::Filter, "kind", [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 1); },
         [](Writer& w) { w.number<int32_t>(ValueType::Int32, 1); }},
        {KeySet::Filter, "address", [](Writer& w) { w.string("0000:6a:01.0"); },
         [](Writer& w) { w.string("/org/svad/Svad1/device/0000_6a_01_0", ValueType::ObjectPath); }},
        {KeySet::Filter, "driver", [](Writer& w) { w.string("vfio-pci"); },
         [](Writer& w) { w.count(ValueType::StringArray, 0); }},
        {KeySet::Filter, "unit", [](Writer& w) { w.string("dmar0"); },
         [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 0); }},
        {KeySet::Filter, "vendor", [](Writer& w) { w.number<uint16_t>(ValueType::Uint16, 0x8086); },
         [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 0x8086); }},
        {KeySet::Filter, "device", [](Writer& w) { w.number<uint16_t>(ValueType::Uint16, 0x0b25); },
         [](Writer& w) { w.number<int16_t>(ValueType::Int16, 0x0b25); }},
        {KeySet::Filter, "group", [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 12); },
         [](Writer& w) { w.number<uint64_t>(ValueType::Uint64, 12); }},
        {KeySet::Filter, "pasid", [](Writer& w) { w.boolean(true); },
         [](Writer& w) { w.number<uint8_t>(ValueType::Byte, 1); }},
        {KeySet::Filter, "ats", [](Writer& w) { w.boolean(true); },
         [](Writer& w) { w.string("true"); }},
        {KeySet::Filter, "pri", [](Writer& w) { w.boolean(false); },
         [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 0); }},
        {KeySet::Filter, "siov", [](Writer& w) { w.boolean(true); },
         [](Writer& w) { w.number<double>(ValueType::Double, 1.0); }},
        {KeySet::Filter, "vfio", [](Writer& w) { w.boolean(true); },
         [](Writer& w) { w.count(ValueType::VariantArray, 1).boolean(true); }},
        {KeySet::Allocate, "mode", [](Writer& w) { w.string("attached"); },
         [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 1); }},
        {KeySet::Allocate, "fault_queue", [](Writer& w) { w.boolean(true); },
         [](Writer& w) { w.number<int64_t>(ValueType::Int64, 1); }},
        {KeySet::Allocate, "owner_pid",
         [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 1234); },
         [](Writer& w) { w.number<int32_t>(ValueType::Int32, 1234); }},
        {KeySet::Reserve, "owner_pid", [](Writer& w) { w.number<uint32_t>(ValueType::Uint32, 0); },
         [](Writer& w) { w.count(ValueType::StringDict, 0); }},
    };
    for (const Key& k : keys) {
        const std::string name = std::string(k.set == KeySet::Reserve ? "reserve-" : "") + k.name;
        Writer good(k.set, 1);
        good.key(k.name);
        k.good(good);
        one(name, good);
        Writer wrong(k.set, 1);
        wrong.key(k.name);
        k.wrong(wrong);
        one(name + "-wrong-type", wrong);
    }
    one("empty", Writer(KeySet::All, 0));
    Writer unknown(KeySet::All, 1);
    unknown.rawKey("colour").string("blue");
    one("unknown-key", unknown);
    Writer longKey(KeySet::All, 1);
    longKey.rawKey(std::string(300, 'k')).boolean(true);
    one("long-key", longKey);
    Writer filter(KeySet::Filter, 3);
    filter.key("kind").number<uint32_t>(ValueType::Uint32, 1);
    filter.key("vendor").number<uint16_t>(ValueType::Uint16, 0x8086);
    filter.key("pasid").boolean(true);
    one("filter-pci-pasid", filter);
    Writer options(KeySet::Allocate, 3);
    options.key("mode").string("handoff");
    options.key("fault_queue").boolean(false);
    options.key("owner_pid").number<uint32_t>(ValueType::Uint32, 4242);
    one("allocate-options", options);
    Writer nested(KeySet::All, 1);
    nested.key("mode").count(ValueType::Dict, 1).key("mode").string("handoff");
    one("nested-dict", nested);
    return n;
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
        write(out / "sysfs", "synth-" + std::to_string(functions),
              svad::fuzz::MemSysfs::recordsOf((scratch / "sys").string()));
        ++n;
    }
    fs::remove_all(scratch);
    // fuzz_sysfs_attrs: the tree as it is, and changes of each kind (fuzz_sysfs_attrs.cpp).
    auto index = [](uint16_t i) {
        return std::string{static_cast<char>(i & 0xffU), static_cast<char>(i >> 8U)};
    };
    auto file = [&index](uint16_t i, const std::string& data) {
        return std::string(1, '\0') + index(i) + index(static_cast<uint16_t>(data.size())) + data;
    };
    auto link = [&index](uint16_t i, const std::string& target) {
        return std::string(1, '\1') + index(i) + target + std::string(1, '\0');
    };
    write(out / "sysfs_attrs", "none", "");
    std::string numbers;
    std::string links;
    for (uint16_t i = 0; i < 64; ++i) {
        numbers += file(i, i % 2 == 0 ? "0xffffffffffffffffff\n" : "-1\n");
        links += link(i, i % 2 == 0 ? "../../../../.." : "/abs");
    }
    write(out / "sysfs_attrs", "numbers", numbers);
    write(out / "sysfs_attrs", "links", links);
    n += 3;
    n += writeDbusArgsSeeds(out / "dbus_args");
    std::cout << "svad-fuzz-seeds: " << n << " seeds under " << out.string() << "\n";
    return 0;
}
