#!/usr/bin/env bash
# Unpacks Docker Engine 26.1 (Debian 13's docker.io, docker-cli, containerd)
# into a private prefix, for the interop tests against a modern engine.
# Never installed system-wide: Debian 13's libc would come with it. Their
# dockerd and containerd need only GLIBC 2.34, so they run on Debian 12;
# trixie's runc needs 2.38, so the engine uses Debian 12's /usr/sbin/runc.
# Cached: a prefix that already answers `dockerd --version` is kept.
set -euo pipefail

PREFIX=${STRATA_ENGINE26_PREFIX:-/var/cache/strata-graphdriver/engine-26}
PACKAGES=(docker.io docker-cli containerd)

if "$PREFIX/usr/sbin/dockerd" --version >/dev/null 2>&1 \
    && "$PREFIX/usr/bin/containerd" --version >/dev/null 2>&1; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$work/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
          -o APT::Sandbox::User=root)
echo "setup: fetching Engine 26 (${PACKAGES[*]}) from Debian trixie into $PREFIX"
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work/debs" && apt-get "${apt_opts[@]}" download "${PACKAGES[@]}" >/dev/null)

# unpack beside the prefix, then rename: a half-unpacked prefix never looks ready
staging="$PREFIX.new"
rm -rf "$staging"
mkdir -p "$staging"
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$staging"
done
"$staging/usr/sbin/dockerd" --version
"$staging/usr/bin/containerd" --version
rm -rf "$PREFIX"
mv "$staging" "$PREFIX"
