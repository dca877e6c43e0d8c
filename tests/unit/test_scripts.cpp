// The project's scripts install what they call: each lists, in its needs
// block (packaging/lib/needs.sh), every external command it runs with the
// Debian package that provides it. These tests hold every script to its list,
// the list to the packages, and needs_check to its message.

#include "shell_scan.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using svad::test::scanShell;
using svad::test::ShellScan;

namespace {

const fs::path kTop = SVAD_SOURCE_DIR;
const std::string kLib = "packaging/lib/needs.sh";

struct RunResult {
    int status = -1;
    std::string output;
};

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) {
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return q + "'";
}

RunResult run(const std::string& command) {
    RunResult r;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) {
        return r;
    }
    std::array<char, 4096> buf{};
    size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
        r.output.append(buf.data(), n);
    }
    int st = ::pclose(pipe);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string readFile(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

// Every script of the project, relative to the top: the *.sh files under
// packaging/ and tests/, and .ci/run. tests/kernel/guest-init.sh is /init of
// the kernel tier's guest: it runs on busybox and the programs run.sh copies
// in, not on this machine's packages.
std::vector<std::string> projectScripts() {
    std::vector<std::string> out = {".ci/run"};
    for (const char* dir : {"packaging", "tests"}) {
        for (const auto& e : fs::recursive_directory_iterator(kTop / dir)) {
            if (e.is_regular_file() && e.path().extension() == ".sh") {
                std::string rel = fs::relative(e.path(), kTop).string();
                if (rel != "tests/kernel/guest-init.sh") {
                    out.push_back(rel);
                }
            }
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

struct Needs {
    bool hasBlock = false;
    std::string error;
    std::map<std::string, std::string> commands; // command -> package
    std::set<std::string> packages;              // every package named
};

// A script's lists, read the way the scripts read them: needs.sh sourced,
// then needs_load on the script.
Needs declared(const std::string& rel) {
    Needs n;
    std::string load = rel == kLib ? std::string() : "needs_load " + quote(rel) + " && ";
    RunResult r = run("bash -c " + quote("source " + quote((kTop / kLib).string()) + " && " + load +
                                         "needs_list"));
    if (r.status != 0) {
        n.error = r.output;
        return n;
    }
    n.hasBlock = true;
    for (const auto& line : lines(r.output)) {
        size_t colon = line.find(':');
        if (colon == std::string::npos) {
            n.packages.insert(line);
        } else {
            n.commands[line.substr(0, colon)] = line.substr(colon + 1);
            n.packages.insert(line.substr(colon + 1));
        }
    }
    return n;
}

const ShellScan& libraryScan() {
    static const ShellScan scan = scanShell(readFile(kTop / kLib));
    return scan;
}

// Commands the scan found that the lists do not name.
std::set<std::string> undeclared(const ShellScan& scan, const Needs& needs) {
    std::set<std::string> out;
    for (const auto& c : scan.commands) {
        if (needs.commands.count(c) == 0) {
            out.insert(c);
        }
    }
    return out;
}

std::string joined(const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) {
        out += (out.empty() ? "" : " ") + x;
    }
    return out;
}

// "/usr/bin/x" and "/bin/x" are one file on a merged-/usr system.
std::string unmerged(const std::string& path) {
    return path.rfind("/usr/", 0) == 0 ? path.substr(4) : path;
}

} // namespace

TEST(ShellScan, FindsTheCommandOfEverySimpleCommand) {
    struct Case {
        const char* script;
        std::set<std::string> commands;
    };
    const std::vector<Case> cases = {
        {"make -j2 bzImage\n", {"make"}},
        {"a | b && c || d; e & f\n", {"a", "b", "c", "d", "e", "f"}},
        {"x=$(sha256sum f | cut -c1-16)\n", {"sha256sum", "cut"}},
        {"echo \"$(tar -xJf t; date +%s) s\"\n", {"tar", "date"}},
        {"echo \"ran $s s (qemu exit $q); whole tier\"\n", {}},
        {"echo 'a; rsync b'\n", {}},
        {"n=$(($(stat -c %s f) / 1048576))\n", {"stat"}},
        {"cat <<EOF\nrsync a b\nEOF\nsed q\n", {"cat", "sed"}},
        {"cat <<-'EOT'\n\tnot a command\n\tEOT\nawk 1\n", {"cat", "awk"}},
        {"case \"$a\" in\n  --x) install=0 ;;\n  -h | --help) sed q; exit 0 ;;\n  *) grep z "
         ";;\nesac\n",
         {"sed", "grep"}},
        {"for p in a b c; do dpkg-query -W \"$p\"; done\n", {"dpkg-query"}},
        {"if ! command -v busybox >/dev/null; then ldd x; fi\n", {"ldd"}},
        {"LC_ALL=C sort <in >out 2>&1\n", {"sort"}},
        {"v=(cmake:cmake ninja:ninja-build)\nv+=(rsync)\n", {}},
        {"f() { cp a b; }\nf x\n", {"cp"}},
        {"function g {\n  mv a b\n}\ng\n", {"mv"}},
        {"w() { \"$@\"; }\nw apt-get update\nw env A=1 B=2 cpio -o\n", {"apt-get", "env", "cpio"}},
        {"timeout --foreground -k 10 900 qemu-system-x86_64 -M q35\n",
         {"timeout", "qemu-system-x86_64"}},
        {"exec ctest -j2\n", {"ctest"}},
        {"sudo dpkg -i x.deb\n", {"dpkg"}},
        {"chroot \"$root\" git clone a b\n", {"chroot", "git"}},
        {"trap 'rm -rf \"$work\"' EXIT\ntrap - EXIT\n", {"rm"}},
        {"while read -r a b; do tr -d x; done < <(lspci -n | awk 1)\n", {"tr", "lspci", "awk"}},
        {"(cd d && find . | cpio -o) >f\n", {"find", "cpio"}},
        {"\"$here/build-kernel.sh\" --x\n./packaging/quickstart.sh test\n\"$build/svad\"\n", {}},
        {"[ -n \"$x\" ] || { strip a; }\n", {"strip"}},
        {"seq 3 \\\n  | tee log\n", {"seq", "tee"}},
        {"x=`uname -r`\n", {"uname"}},
        {"# rsync in a comment\nmkdir -p d # and cp here\n", {"mkdir"}},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(scanShell(c.script).commands, c.commands) << c.script;
    }
    ShellScan paths = scanShell(cases[24].script);
    EXPECT_EQ(paths.paths,
              (std::set<std::string>{"build-kernel.sh", "packaging/quickstart.sh", "svad"}));
}

TEST(Scripts, AnUndeclaredCommandIsNamed) {
    Needs needs;
    needs.commands = {{"make", "make"}, {"tar", "tar"}};
    ShellScan scan =
        scanShell("tar -xJf t\nmake headers\nrsync -a usr/include out\n", libraryScan());
    EXPECT_EQ(undeclared(scan, needs), (std::set<std::string>{"rsync"}));
}

TEST(Scripts, EveryScriptListsWhatItCalls) {
    std::vector<std::string> scripts = projectScripts();
    for (const char* expected :
         {"packaging/quickstart.sh", "packaging/demo.sh", "tests/kernel/run.sh",
          "tests/kernel/build-kernel.sh", ".ci/run"}) {
        EXPECT_NE(std::find(scripts.begin(), scripts.end(), expected), scripts.end()) << expected;
    }
    for (const auto& rel : scripts) {
        SCOPED_TRACE(rel);
        ShellScan scan = scanShell(readFile(kTop / rel), libraryScan());
        Needs needs = declared(rel);
        if (!needs.hasBlock) {
            EXPECT_TRUE(scan.commands.empty())
                << rel << " calls " << joined(scan.commands)
                << " but has no needs block (packaging/lib/needs.sh): " << needs.error;
            continue;
        }
        std::set<std::string> missing = undeclared(scan, needs);
        EXPECT_TRUE(missing.empty())
            << rel << " calls " << joined(missing)
            << " but its needs block does not list them (add COMMAND:PACKAGE)";
        // A script it runs needs what that script needs.
        for (const auto& tail : scan.paths) {
            fs::path child = fs::path(rel).parent_path() / tail;
            if (!fs::exists(kTop / child)) {
                child = tail;
            }
            std::string childRel = child.lexically_normal().string();
            if (std::find(scripts.begin(), scripts.end(), childRel) == scripts.end()) {
                continue;
            }
            Needs childNeeds = declared(childRel);
            if (!childNeeds.hasBlock) {
                continue;
            }
            for (const auto& [cmd, pkg] : childNeeds.commands) {
                EXPECT_EQ(needs.commands.count(cmd), 1U)
                    << rel << " runs " << childRel << ", which needs " << cmd << ":" << pkg
                    << "; add needs_load " << childRel << " to its block";
            }
            for (const auto& pkg : childNeeds.packages) {
                EXPECT_EQ(needs.packages.count(pkg), 1U)
                    << rel << " runs " << childRel << ", which needs " << pkg;
            }
        }
    }
    // The scan sees the kernel build's own commands, so the lists are not vacuous.
    ShellScan kernel = scanShell(readFile(kTop / "tests/kernel/build-kernel.sh"), libraryScan());
    EXPECT_EQ(kernel.commands.count("make"), 1U);
    EXPECT_EQ(kernel.commands.count("tar"), 1U);
}

TEST(Scripts, CheckNamesEachMissingCommandWithItsPackage) {
    fs::path stubs = fs::temp_directory_path() / ("svad-needs-stubs." + std::to_string(::getpid()));
    int checked = 0;
    for (const auto& rel : projectScripts()) {
        SCOPED_TRACE(rel);
        Needs needs = declared(rel);
        if (!needs.hasBlock || needs.commands.empty()) {
            continue;
        }
        fs::remove_all(stubs);
        fs::create_directories(stubs);
        for (const auto& [cmd, pkg] : needs.commands) {
            fs::create_symlink("/bin/true", stubs / cmd);
        }
        std::string load = rel == kLib ? std::string() : "needs_load " + quote(rel) + " && ";
        auto check = [&]() {
            return run("bash -c " +
                       quote("source " + quote((kTop / kLib).string()) + " && " + load +
                             "PATH=" + quote(stubs.string()) + " && needs_check"));
        };
        RunResult all = check();
        EXPECT_EQ(all.status, 0) << all.output;
        // Take away one command: the check stops and names it with its package.
        const auto& [cmd, pkg] = *needs.commands.rbegin();
        fs::remove(stubs / cmd);
        RunResult one = check();
        EXPECT_EQ(one.status, 1) << one.output;
        EXPECT_NE(one.output.find(cmd + " (Debian package " + pkg + ")"), std::string::npos)
            << one.output;
        ++checked;
    }
    fs::remove_all(stubs);
    EXPECT_GE(checked, 4);
}

TEST(Scripts, ListedPackagesProvideTheirCommands) {
    std::map<std::pair<std::string, std::string>, std::string>
        pairs; // (command, package) -> script
    std::set<std::string> commands;
    std::set<std::string> packages;
    for (const auto& rel : projectScripts()) {
        for (const auto& [cmd, pkg] : declared(rel).commands) {
            pairs.emplace(std::make_pair(cmd, pkg), rel);
            commands.insert(cmd);
            packages.insert(pkg);
        }
    }
    // Where each command is, and which packages are installed: one query each.
    std::string names;
    for (const auto& c : commands) {
        names += " " + quote(c);
    }
    std::map<std::string, std::string> real; // command -> its file, links resolved
    for (const auto& line :
         lines(run("bash -c " + quote("for c in" + names + "; do p=$(command -v \"$c\") && " +
                                      "printf '%s\\t%s\\n' \"$c\" \"$(readlink -f \"$p\")\"; done"))
                   .output)) {
        size_t tab = line.find('\t');
        if (tab != std::string::npos && line.size() > tab + 1 && line[tab + 1] == '/') {
            real[line.substr(0, tab)] = line.substr(tab + 1);
        }
    }
    std::string pkgs;
    for (const auto& p : packages) {
        pkgs += " " + quote(p);
    }
    std::set<std::string> present;
    for (const auto& line :
         lines(run("dpkg-query -W -f='${Package}\\t${Status}\\n'" + pkgs).output)) {
        size_t tab = line.find('\t');
        if (tab != std::string::npos &&
            line.find("install ok installed", tab) != std::string::npos) {
            present.insert(line.substr(0, tab));
        }
    }
    std::map<std::string, std::vector<std::string>> files;
    int verified = 0;
    for (const auto& [pair, rel] : pairs) {
        const auto& [cmd, pkg] = pair;
        std::string file = real.count(cmd) != 0 ? real[cmd] : std::string();
        if (present.count(pkg) != 0) {
            if (files.count(pkg) == 0) {
                files[pkg] = lines(run("dpkg-query -L " + quote(pkg)).output);
            }
            bool ships = false;
            for (const auto& f : files[pkg]) {
                fs::path p(f);
                std::string dir = p.parent_path().filename().string();
                if ((p.filename() == cmd && (dir == "bin" || dir == "sbin")) ||
                    (!file.empty() && unmerged(f) == unmerged(file))) {
                    ships = true;
                    break;
                }
            }
            EXPECT_TRUE(ships) << rel << " lists " << cmd << ":" << pkg << ", but " << pkg
                               << " ships no " << cmd;
            ++verified;
        } else if (!file.empty()) {
            RunResult owner = run("dpkg-query -S " + quote(file));
            ADD_FAILURE() << rel << " lists " << cmd << ":" << pkg << ", but " << pkg
                          << " is not installed and " << cmd << " is " << file << " ("
                          << owner.output << ")";
        }
    }
    std::cout
        << "verified " << verified << " of " << pairs.size()
        << " command:package pairs against dpkg (the rest name packages not installed here)\n";
    EXPECT_GT(static_cast<size_t>(verified), pairs.size() / 3);
}
