#pragma once
// What a bash script of the project calls: a small reader of the shell
// grammar that the project's scripts use (simple commands, pipelines and
// lists, quoting, $(...), `...`, <(...), $((...)), here-documents, case,
// for, functions, redirections, assignments and arrays), enough to find the
// word in command position of every simple command.

#include <set>
#include <string>
#include <string_view>

namespace svad::test {

struct ShellScan {
    std::set<std::string> commands;  // external commands called by name
    std::set<std::string> functions; // functions the script defines
    std::set<std::string> wrappers;  // of those, the ones that run "$@"
    std::set<std::string> paths;     // programs run by path ("$here/x.sh" gives "x.sh")
};

// Commands behind `exec`, `env`, `timeout`, a wrapper function and the like
// count; `command -v NAME` only asks and does not. sudo is never counted: the
// scripts reach it only when they are not root, through a wrapper that asks
// first.
// `known` brings the functions (and wrappers) of a file the script sources.
ShellScan scanShell(std::string_view script, const ShellScan& known = {});

} // namespace svad::test
