# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a block device (or vdev file) already holds, and whether it is in use.

Two questions come before any mkfs or zpool create: does the device carry a
signature (a filesystem, a partition table, an LVM or ZFS label), and is it
in use (mounted, held by device-mapper or md, an LVM physical volume, a
member of an imported pool, swap). The first can be overridden with
``force``; the second never: writing over a device in use destroys live data.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import stat

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.command import Command
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.mount import mounts


class DeviceError(GraphDriverError):
    pass


def is_block_device(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def blkid(dev):
    """blkid's low-level probe of ``dev`` (bypasses its cache): {} when blank."""
    try:
        out = Command("blkid", "-p", "-o", "export", dev).run(timeout=60)
    except CommandError as e:
        # Exit 2: nothing found. That is the answer, not a failure.
        if e.returncode == 2:
            return {}
        raise DeviceError("cannot probe %s: %s" % (dev, e))
    info = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


def signatures(dev):
    """Every signature wipefs finds on ``dev`` (it lists, it does not erase,
    without -a), as [{"type", "offset", "uuid", "label"}]."""
    try:
        out = Command("wipefs", "--no-act", "--json", dev).run(timeout=60)
    except CommandError as e:
        raise DeviceError("cannot list signatures on %s: %s" % (dev, e))
    if not out.strip():
        return []
    try:
        return json.loads(out).get("signatures", [])
    except ValueError:
        raise DeviceError("wipefs %s: unexpected output %r" % (dev, out[:200]))


def describe(dev):
    """One line for a message: 'btrfs (label lab, uuid …)'."""
    info = blkid(dev)
    kind = info.get("TYPE") or info.get("PTTYPE")
    if not kind:
        sigs = signatures(dev)
        return ", ".join(s.get("type", "?") for s in sigs) or None
    extra = []
    if info.get("LABEL"):
        extra.append("label %s" % info["LABEL"])
    if info.get("UUID"):
        extra.append("uuid %s" % info["UUID"])
    if info.get("PTTYPE") and not info.get("TYPE"):
        kind = "%s partition table" % kind
    return kind + (" (%s)" % ", ".join(extra) if extra else "")


def _sys_name(dev):
    return os.path.basename(os.path.realpath(dev))


def _partitions(name):
    base = "/sys/class/block/%s" % name
    try:
        return [n for n in os.listdir(base) if n.startswith(name) and os.path.isdir(os.path.join(base, n))]
    except OSError:
        return []


def holders(dev):
    """Kernel holders of the device or its partitions (device-mapper, md, bcache)."""
    name = _sys_name(dev)
    found = []
    for n in [name] + _partitions(name):
        try:
            found += os.listdir("/sys/class/block/%s/holders" % n)
        except OSError:
            pass
    return sorted(found)


def mounted_at(dev):
    """Mount points whose source is the device or one of its partitions."""
    real = os.path.realpath(dev)
    names = [real] + ["/dev/" + p for p in _partitions(_sys_name(dev))]
    return sorted(set(m.mountpoint for m in mounts() if os.path.realpath(m.source) in names))


def swap_devices():
    try:
        with open("/proc/swaps") as f:
            return [os.path.realpath(line.split()[0]) for line in f.readlines()[1:] if line.strip()]
    except OSError:
        return []


def lvm_physical_volumes():
    try:
        out = Command("pvs", "--noheadings", "-o", "pv_name").run(timeout=60)
    except GraphDriverError:
        return []
    return [os.path.realpath(line.strip()) for line in out.splitlines() if line.strip()]


def in_use(dev, zpool_members=()):
    """Why ``dev`` must not be written over, as a list of reasons; [] when free.

    ``zpool_members``: vdev paths of the imported pools (zpool.py knows them).
    """
    real = os.path.realpath(dev)
    reasons = []
    mps = mounted_at(dev)
    if mps:
        reasons.append("mounted at %s" % ", ".join(mps))
    if is_block_device(dev):
        held = holders(dev)
        if held:
            reasons.append("held by %s" % ", ".join(held))
        if real in swap_devices():
            reasons.append("in use as swap")
        if real in lvm_physical_volumes():
            reasons.append("an LVM physical volume")
    if real in [os.path.realpath(m) for m in zpool_members]:
        reasons.append("a vdev of an imported zpool")
    return reasons


def check_writable(dev, force, expect=None, zpool_members=()):
    """Raise DeviceError unless ``dev`` may be formatted.

    ``expect``: a signature type that is fine to find (it is ours already).
    """
    if not os.path.exists(dev):
        raise DeviceError("device %s does not exist: attach it (or losetup the lab file) first" % dev)
    reasons = in_use(dev, zpool_members)
    if reasons:
        raise DeviceError("device %s is in use (%s): refusing to write over it, even with force; "
                          "free it first" % (dev, "; ".join(reasons)))
    found = describe(dev) if (is_block_device(dev) or os.path.isfile(dev)) else None
    if found and not force and not (expect and found.split(" ")[0] == expect):
        raise DeviceError("device %s holds %s: refusing to overwrite it; wipe it (wipefs -a %s) or set "
                          "force: true to destroy it" % (dev, found, dev))
    return found
