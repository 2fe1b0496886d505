#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a Debian 12 host,
# as root: the system tools each driver calls, a real Docker engine, and a
# Python venv with the test tools. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip git make tar util-linux fdisk kmod attr e2fsprogs
  xfsprogs btrfs-progs zfs-fuse fuse3 fuse-overlayfs lvm2 thin-provisioning-tools
  docker.io busybox-static
  # devicemapper tests: a qemu VM (-accel tcg) booting Debian's kernel (it has 9p)
  qemu-system-x86 linux-image-amd64
  # RAID-member refusal tests: mdadm makes md arrays in the VM (it starts no
  # service here: policy-rc.d below, and its one unit needs dracut)
  mdadm
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d 101: packages must not start their daemons (dockerd,
  # zfs-fuse); the tests start private ones and stop them by pid.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  # mdadm's install rebuilds the host's initramfs (to assemble arrays at
  # boot): the images are put back as they were, the host boots as before
  keep=$(mktemp -d)
  cp -a /boot/initrd.img-* "$keep"/ 2>/dev/null || true
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  cp -a "$keep"/. /boot/ && rm -rf "$keep"
  rm -f /usr/sbin/policy-rc.d
fi

# Engine 26.1 beside 20.10, in a private prefix (cached across clones)
./scripts/setup-engine26.sh

PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import ansible, pytest, testinfra, molecule, ansiblelint, antsibull_changelog, distlib, xdist, pytest_mock' 2>/dev/null \
    || [ ! -x .venv/bin/shellcheck ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
fi

# Ansible finds a collection at <path>/ansible_collections/<ns>/<name>.
mkdir -p .build/ansible_collections/strata
ln -sfn "$(pwd)" .build/ansible_collections/strata/graphdriver
echo "setup: ready"
