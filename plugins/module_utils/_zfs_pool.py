# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A ZFS pool over declared vdevs, and the dataset Docker's zfs driver lives on.

Vdevs are declared as data ({"type": "mirror", "devices": [...]}) and turned
into ``zpool`` command lines in one place. What exists is read from ``zpool
status`` (the one listing both kernel ZFS and zfs-fuse print). A vdev the
caller did not list is reported, and removed only when asked: ZFS cannot
shrink most pools, so a silent removal attempt is never the right default.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time
import re

from ansible_collections.strata.graphdriver.plugins.module_utils import _blockdev as blockdev
from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import (
    CmdRunner, fixed, flag, option, option_each, positional)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError

VDEV_TYPES = ("stripe", "mirror", "raidz", "raidz1", "raidz2", "raidz3")
_GROUP = re.compile(r"^(mirror|raidz[123]?|replacing|spare)(-\d+)?$")
_SECTIONS = ("logs", "cache", "spares")


class ZpoolError(GraphDriverError):
    pass


def property_value(value):
    """YAML turns on/off into booleans; ZFS wants the words back."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return str(value)


def _norm_type(t):
    return "raidz1" if t == "raidz" else t


def vdev_args(vdev):
    t = _norm_type(vdev["type"])
    return list(vdev["devices"]) if t == "stripe" else [t] + list(vdev["devices"])


def _vdevs(value):
    return [a for v in (value or []) for a in vdev_args(v)]


def _properties(value):
    return option_each("-o")(dict((k, property_value(v)) for k, v in (value or {}).items()))


ZPOOL = CmdRunner(
    "zpool",
    create=fixed("create"), add=fixed("add"), attach=fixed("attach"), detach=fixed("detach"),
    remove=fixed("remove"), destroy=fixed("destroy", "-f"), status=fixed("status"),
    list_names=fixed("list", "-H", "-o", "name"),
    force=flag("-f"), properties=_properties, root_mountpoint=option("-m"),
    pool=positional(), device=positional(), new_device=positional(), vdevs=_vdevs)

ZFS = CmdRunner(
    "zfs",
    create=fixed("create", "-p"), set=fixed("set"), list_names=fixed("list", "-H", "-o", "name"),
    get=fixed("get", "-H", "-o", "property,value"),
    properties=_properties, names=lambda names: [",".join(names)],
    assignment=lambda kv: ["%s=%s" % kv], dataset=positional())


def parse_status(text):
    """``zpool status <pool>`` -> [{"type", "name", "devices"}] of top-level data vdevs."""
    vdevs = []
    in_config = False
    pool_indent = None
    section = None
    for line in text.splitlines():
        if line.strip().startswith("config:"):
            in_config = True
            continue
        if not in_config:
            continue
        if line.strip().startswith("errors:"):
            break
        if not line.strip() or line.strip().startswith("NAME"):
            continue
        expanded = line.expandtabs(8)
        indent = len(expanded) - len(expanded.lstrip())
        name = expanded.split()[0]
        if pool_indent is None:
            pool_indent = indent
            continue
        if indent == pool_indent:
            section = name if name in _SECTIONS else None
            continue
        if section:
            continue
        if indent == pool_indent + 2:
            m = _GROUP.match(name)
            if m:
                vdevs.append({"type": _norm_type(m.group(1)), "name": name, "devices": []})
            else:
                vdevs.append({"type": "stripe", "name": name, "devices": [name]})
        elif indent > pool_indent + 2 and vdevs:
            if not _GROUP.match(name):
                vdevs[-1]["devices"].append(name)
    return vdevs


def _succeeds(cmd):
    try:
        cmd.run(timeout=60)
        return True
    except CommandError:
        return False


def pool_exists(name):
    return _succeeds(ZPOOL("list_names pool", pool=name))


def pool_vdevs(name):
    try:
        return parse_status(ZPOOL("status pool", pool=name).run(timeout=60))
    except CommandError as e:
        raise ZpoolError("cannot read the layout of pool %s: %s" % (name, e))


def imported_members():
    """Every vdev path of every imported pool: those must never be reused."""
    try:
        out = ZPOOL("list_names").run(timeout=60)
    except GraphDriverError:
        return []
    found = []
    for pool in out.split():
        for v in pool_vdevs(pool):
            found += v["devices"]
    return found


def _run_retrying_busy(cmd, attempts=5):
    """Run ``cmd``; a destroy that finds the pool busy is tried again: a
    dataset unmounted a moment ago can still be held (zfs-fuse's mount
    helper lets go late)."""
    for attempt in range(attempts):
        try:
            return cmd.run(timeout=600)
        except CommandError as e:
            if cmd.argv[1:2] != ["destroy"] or "busy" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _resolve(dev):
    """zpool shows disks by short name (sdb) and files by path."""
    if os.path.isabs(dev):
        return os.path.realpath(dev)
    return os.path.realpath(os.path.join("/dev", dev))


def dataset_properties(dataset, names):
    out = ZFS("get names dataset", names=names, dataset=dataset).run(timeout=60)
    props = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            props[parts[0]] = parts[1]
    return props


def dataset_exists(dataset):
    return _succeeds(ZFS("list_names dataset", dataset=dataset))


class ZpoolPlan(object):
    def __init__(self, name, vdevs, state="present", dataset=None, mountpoint=None, properties=None,
                 root_mountpoint="none", pool_properties=None, file_size=None, remove_unlisted=False,
                 force=False):
        self.name = name
        self.state = state
        self.dataset = dataset
        self.mountpoint = mountpoint
        self.vdevs = [{"type": _norm_type(v.get("type") or "stripe"), "devices": list(v["devices"])}
                      for v in (vdevs or [])]
        self.force = force
        self.commands = []
        self.files = []          # sparse files to create first: (path, bytes)
        self.created = False
        self.destroyed = False
        self.added = []
        self.removed = []
        self.unlisted = []
        self.exists = pool_exists(name)
        self.before = self.snapshot(dataset) if self.exists else None
        if state == "absent":
            self._absent()
            return
        self._check_vdevs()
        if not self.exists:
            self._create(root_mountpoint, pool_properties, file_size)
        else:
            self._grow(remove_unlisted, file_size)
        if dataset:
            self._dataset(dataset, mountpoint, properties or {})

    def _check_vdevs(self):
        if not self.vdevs:
            raise ZpoolError("pool %s: list at least one vdev" % self.name)
        for v in self.vdevs:
            if v["type"] not in ("stripe", "mirror", "raidz1", "raidz2", "raidz3"):
                raise ZpoolError("pool %s: unknown vdev type %r (use %s)"
                                 % (self.name, v["type"], ", ".join(VDEV_TYPES)))
            if not v["devices"]:
                raise ZpoolError("pool %s: a %s vdev needs devices" % (self.name, v["type"]))
        # A stripe vdev is one device each, as zpool sees it.
        flat = []
        for v in self.vdevs:
            if v["type"] == "stripe":
                flat += [{"type": "stripe", "devices": [d]} for d in v["devices"]]
            else:
                flat.append(v)
        self.vdevs = flat

    def _new_devices(self, devices, file_size):
        members = imported_members()
        for d in devices:
            if not os.path.exists(d) and file_size and not blockdev.is_block_device(d):
                if not os.path.isabs(d):
                    raise ZpoolError("vdev file %s: give an absolute path" % d)
                self.files.append((d, file_size))
                continue
            self.commands += blockdev.claim(d, self.force, zpool_members=members).wipe()

    def _create(self, root_mountpoint, pool_properties, file_size):
        devices = [d for v in self.vdevs for d in v["devices"]]
        self._new_devices(devices, file_size)
        self.commands.append(ZPOOL("create force properties root_mountpoint pool vdevs", force=self.force,
                                   properties=pool_properties, root_mountpoint=root_mountpoint or "none",
                                   pool=self.name, vdevs=self.vdevs))
        self.created = True

    def _grow(self, remove_unlisted, file_size):
        current = pool_vdevs(self.name)
        where = {}
        for i, v in enumerate(current):
            for d in v["devices"]:
                where[_resolve(d)] = i
        matched = set()
        for v in self.vdevs:
            present = [d for d in v["devices"] if _resolve(d) in where]
            missing = [d for d in v["devices"] if _resolve(d) not in where]
            if not present:
                self._new_devices(missing, file_size)
                self.commands.append(ZPOOL("add force pool vdevs", force=self.force, pool=self.name, vdevs=[v]))
                self.added.append(v)
                continue
            idx = set(where[_resolve(d)] for d in present)
            if len(idx) > 1:
                raise ZpoolError("pool %s: devices %s are in different vdevs of the pool, not one %s"
                                 % (self.name, ", ".join(present), v["type"]))
            i = idx.pop()
            matched.add(i)
            if missing:
                if v["type"] != "mirror" or current[i]["type"] not in ("mirror", "stripe"):
                    raise ZpoolError("pool %s: vdev %s cannot take %s (a %s vdev's width is fixed): "
                                     "declare the vdev as it is" % (self.name, current[i]["name"],
                                                                    ", ".join(missing), current[i]["type"]))
                self._new_devices(missing, file_size)
                for d in missing:
                    # attach makes a single disk a mirror, or widens a mirror.
                    self.commands.append(ZPOOL("attach force pool device new_device", force=self.force,
                                               pool=self.name, device=current[i]["devices"][0], new_device=d))
                self.added.append({"type": "mirror", "devices": missing})
            extra = [d for d in current[i]["devices"] if _resolve(d) not in [_resolve(x) for x in v["devices"]]]
            if extra:
                self.unlisted.append({"type": current[i]["type"], "devices": extra, "vdev": current[i]["name"]})
                if remove_unlisted:
                    for d in extra:
                        self.commands.append(ZPOOL("detach pool device", pool=self.name, device=d))
                    self.removed.append({"type": current[i]["type"], "devices": extra})
        for i, v in enumerate(current):
            if i not in matched:
                self.unlisted.append({"type": v["type"], "devices": v["devices"], "vdev": v["name"]})
                if remove_unlisted:
                    self.commands.append(ZPOOL("remove pool device", pool=self.name, device=v["name"]))
                    self.removed.append({"type": v["type"], "devices": v["devices"]})

    def _dataset(self, dataset, mountpoint, properties):
        full = self.dataset = self._full(dataset)
        wanted = dict((k, property_value(v)) for k, v in properties.items())
        if mountpoint:
            wanted["mountpoint"] = mountpoint
        if self.created or not dataset_exists(full):
            self.commands.append(ZFS("create properties dataset", properties=wanted, dataset=full))
            return
        have = dataset_properties(full, sorted(wanted)) if wanted else {}
        for k, val in sorted(wanted.items()):
            if have.get(k) != val:
                self.commands.append(ZFS("set assignment dataset", assignment=(k, val), dataset=full))

    def _absent(self):
        if not self.exists:
            return
        if not self.force:
            raise ZpoolError("state: absent destroys pool %s and every dataset on it: set force: true to "
                             "confirm" % self.name)
        self.commands.append(ZPOOL("destroy pool", pool=self.name))
        self.destroyed = True

    def _full(self, dataset):
        return dataset if dataset.startswith(self.name + "/") else "%s/%s" % (self.name, dataset)

    @property
    def changed(self):
        return bool(self.commands or self.files)

    def apply(self):
        for path, size in self.files:
            with open(path, "wb") as f:
                f.truncate(size)
        for cmd in self.commands:
            try:
                _run_retrying_busy(cmd)
            except CommandError as e:
                raise ZpoolError("%s; pool %s is as the commands before left it" % (e, self.name))
        return self.snapshot(self.dataset)

    def planned(self):
        """The pool a run would leave (check mode), from the plan alone."""
        if self.state == "absent":
            return None
        before = self.before or {"name": self.name, "vdevs": []}
        vdevs = [] if self.created else [dict(v) for v in before["vdevs"]]
        removed = set(d for v in self.removed for d in v["devices"])
        vdevs = [dict(v, devices=[d for d in v["devices"] if d not in removed]) for v in vdevs]
        vdevs = [v for v in vdevs if v["devices"]]
        vdevs += [{"type": v["type"], "devices": list(v["devices"])}
                  for v in (self.vdevs if self.created else self.added)]
        state = {"name": self.name, "vdevs": vdevs}
        if self.dataset:
            state["dataset"] = {"name": self.dataset,
                                "mountpoint": self.mountpoint or (before.get("dataset") or {}).get("mountpoint")}
        return state

    def result(self, after):
        return {"name": self.name, "created": self.created, "destroyed": self.destroyed, "added": self.added,
                "removed": self.removed, "unlisted_vdevs": self.unlisted,
                "files_created": [f[0] for f in self.files],
                "vdevs": (after or {}).get("vdevs", []), "dataset": (after or {}).get("dataset")}

    def diff(self, after):
        return {"before": self.before or {}, "after": after or {}}

    def snapshot(self, dataset=None):
        if not pool_exists(self.name):
            return None
        state = {"name": self.name, "vdevs": [{"type": v["type"], "devices": v["devices"]}
                                              for v in pool_vdevs(self.name)]}
        if dataset:
            full = self._full(dataset)
            if dataset_exists(full):
                state["dataset"] = {"name": full, "mountpoint": dataset_properties(full, ["mountpoint"])
                                    .get("mountpoint")}
        return state
