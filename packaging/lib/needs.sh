# shellcheck shell=bash
# What a script of svad's needs from the machine, and the check that it is
# there. Sourced by every script that installs packages (quickstart.sh, the
# kernel tier's run.sh, fresh-root-check.sh).
#
# A script lists, between a line "# needs:begin" and a line "# needs:end",
#   needs+=(COMMAND:PACKAGE ...)    every external command it calls, itself or
#                                   through what it runs (make, cmake, ctest and
#                                   the tests), with the Debian package that
#                                   provides it;
#   needs_packages+=(PACKAGE ...)   the packages it needs that bring no command
#                                   of their own (headers, libraries, data);
#   needs_load PATH ...             the lists of the project's scripts it runs
#                                   (PATH relative to the top of the clone).
# The block is plain bash: it runs as part of the script, and needs_load and
# the suite's check (tests/unit/test_scripts.cpp) read it the same way.
#
#   needs_install   installs (apt-get) every listed package that is missing
#   needs_check     stops with status 1, naming every listed command that is
#                   not on PATH and the package that provides it
#   needs_list      prints the lists, one COMMAND:PACKAGE or PACKAGE a line
#
# NEEDS_PREFIX (default "needs") starts each line these functions print.

needs=()
needs_packages=()
needs_top=$(cd "${BASH_SOURCE[0]%/*}/../.." && pwd)

needs_say() {
  echo "${NEEDS_PREFIX:-needs}: $*" >&2
}

# Appends the needs block of each named script of the project.
needs_load() {
  local rel file block
  for rel in "$@"; do
    file=$needs_top/$rel
    if [ ! -f "$file" ]; then
      needs_say "needs_load: $rel is not a file of this project"
      return 1
    fi
    block=$(sed -n '/^# needs:begin$/,/^# needs:end$/p' "$file")
    if [ -z "$block" ]; then
      needs_say "needs_load: $rel has no '# needs:begin' ... '# needs:end' block"
      return 1
    fi
    eval "$block"
  done
}

# Every package of both lists, once each, in the order first named.
needs_all_packages() {
  local entry seen=" "
  for entry in "${needs[@]/#*:/}" "${needs_packages[@]}"; do
    case "$seen" in *" $entry "*) continue ;; esac
    seen="$seen$entry "
    echo "$entry"
  done
}

needs_list() {
  printf '%s\n' "${needs[@]}" "${needs_packages[@]}"
}

needs_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    needs_say "'$*' needs root: run this as root or install sudo"
    exit 1
  fi
}

needs_install() {
  local p missing=()
  for p in $(needs_all_packages); do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  needs_say "installing ${missing[*]}"
  needs_as_root apt-get update -q
  needs_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}

needs_check() {
  local entry cmd missing=()
  for entry in "${needs[@]}"; do
    cmd=${entry%%:*}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd (Debian package ${entry#*:})")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  needs_say "missing commands, so nothing was started:"
  for entry in "${missing[@]}"; do
    needs_say "  $entry"
  done
  exit 1
}

# What these functions call themselves.
# needs:begin
needs+=(
  dirname:coreutils id:coreutils sed:sed grep:grep
  dpkg-query:dpkg apt-get:apt env:coreutils
)
# needs:end
