#!/usr/bin/env bash
# Builds svad's Debian packages (svad, svad-dev) from this clone's tracked
# files, with packaging/debian as debian/, and checks them with lintian.
#
#   packaging/build-deb.sh [OUTDIR]     default OUTDIR: build/deb
#
# Installs the build's Debian packages first if any are missing (as root, or
# with sudo). Exits non-zero if the build fails or lintian reports an error.
set -euo pipefail

top=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
out=$(mkdir -p "${1:-$top/build/deb}" && cd "${1:-$top/build/deb}" && pwd)

# shellcheck source=lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=build-deb
# needs:begin
needs+=(
  dpkg-buildpackage:dpkg-dev dpkg-parsechangelog:dpkg-dev dh:debhelper lintian:lintian
  scdoc:scdoc git:git tar:tar mktemp:coreutils mkdir:coreutils cp:coreutils
  rm:coreutils tee:coreutils ls:coreutils tail:coreutils
)
needs_load packaging/quickstart.sh
# needs:end
needs_install
needs_check

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
cmake_version=$(sed -n 's/^project(svad VERSION \([0-9.]*\).*/\1/p' "$top/CMakeLists.txt")
[ "${version%%-*}" = "$cmake_version" ] || {
  echo "build-deb: packaging/debian/changelog says $version, CMakeLists.txt $cmake_version" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/svad-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/svad-$version
mkdir -p "$src"
# The tracked files as they are in the work tree, and debian/ beside them.
git -C "$top" ls-files -z --cached | (cd "$top" && tar --null -T - -cf -) | tar -xf - -C "$src"
cp -r "$top/packaging/debian" "$src/debian"

echo "build-deb: building svad $version in $src"
(cd "$src" && dpkg-buildpackage -b -us -uc -j"${JOBS:-2}") >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed" >&2
  exit 1
}
changes=$(echo "$work"/svad_"$version"_*.changes)
echo "build-deb: lintian"
lintian --fail-on error "$changes" | tee "$work/lintian.log"
for f in "$work"/*.deb "$changes" "$work"/*.buildinfo; do
  cp "$f" "$out/"
done
echo "build-deb: packages in $out:"
(cd "$out" && ls -1 ./*.deb)
