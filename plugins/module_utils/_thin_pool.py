# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An LVM thin pool for Docker's devicemapper driver (direct-lvm), declared.

Docker's recipe (docs "Configure direct-lvm mode manually", and
daemon/graphdriver/devmapper/device_setup.go) as a plan of commands:

    pvcreate DEV...                 vgcreate VG DEV...
    lvcreate --wipesignatures y -n POOL VG -l 95%VG
    lvcreate --wipesignatures y -n POOLmeta VG -l 1%VG
    lvconvert -y --zero n -c 512K --thinpool VG/POOL --poolmetadata VG/POOLmeta
    <profile_dir>/PROFILE.profile   thin_pool_autoextend_threshold/_percent
    lvchange --metadataprofile PROFILE VG/POOL
    lvchange --monitor y VG/POOL    (dmeventd extends the pool at the threshold)

On an existing VG the listed devices that are not in it are added
(vgextend), the pool grows to its declared size (never shrinks: LVM cannot
shrink a thin pool), and a PV that is not listed stays unless asked. Every
device written to passes the collection's one refusal rule
(``blockdev.claim``); the pool is removed only with force and never while
something holds it (Docker's thin devices).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re

from ansible_collections.strata.graphdriver.plugins.module_utils import _blockdev as blockdev
from ansible_collections.strata.graphdriver.plugins.module_utils._cmd_runner import CmdRunner, fixed, option, positional
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import CommandError, GraphDriverError
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.fileutil import atomic_write, makedirs
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.projectquota import parse_size

# Docker's direct-lvm defaults (device_setup.go).
DEFAULT_SIZE = "95%VG"
DEFAULT_METADATA_SIZE = "1%VG"
DEFAULT_CHUNK_SIZE = "512K"
DEFAULT_THRESHOLD = 80
DEFAULT_PERCENT = 20
# pvcreate's default data alignment: a new PV's first extent starts here.
PE_START = 1 << 20
_PERCENT_VG = re.compile(r"^(\d+(?:\.\d+)?)%VG$", re.I)


class ThinPoolError(GraphDriverError):
    pass


# --- the LVM tools: each command line declared once -------------------------

def _size_args(size):
    """'95%VG' -> ['-l', '95%VG']; '10G' -> ['-L', '10G']."""
    return [] if size is None else (["-l", size] if "%" in size else ["-L", size])


PVCREATE = CmdRunner("pvcreate", devices=positional())
PVREMOVE = CmdRunner("pvremove", devices=positional())
VGCREATE = CmdRunner("vgcreate", vg=positional(), devices=positional())
VGEXTEND = CmdRunner("vgextend", vg=positional(), devices=positional())
VGREDUCE = CmdRunner("vgreduce", vg=positional(), devices=positional())
VGREMOVE = CmdRunner("vgremove", vg=positional())
# --wipesignatures: an old filesystem signature in the extents must not be
# taken for the pool's (Docker's recipe)
LVCREATE = CmdRunner("lvcreate", wipe=fixed("--wipesignatures", "y"), name=option("-n"), vg=positional(),
                     size=_size_args)
# zeroing off: Docker's recommendation (every layer is written whole anyway)
LVCONVERT = CmdRunner("lvconvert", yes=fixed("-y"), zero=lambda zero: ["--zero", "y" if zero else "n"],
                      chunk_size=option("-c"), thinpool=option("--thinpool"), metadata=option("--poolmetadata"))
LVEXTEND = CmdRunner("lvextend", size=_size_args, lv=positional())
LVCHANGE = CmdRunner("lvchange", profile=option("--metadataprofile"), monitor=fixed("--monitor", "y"),
                     lv=positional())
LVREMOVE = CmdRunner("lvremove", force=fixed("-f"), lv=positional())
LVMCONFIG = CmdRunner("lvmconfig", profile_dir=fixed("--type", "full", "config/profile_dir"))
DMSETUP = CmdRunner("dmsetup", status=fixed("status"), name=positional())
# a JSON report, sizes in bytes
_REPORT = dict(json=fixed("--reportformat", "json", "--units", "b", "--nosuffix"),
               fields=lambda fields: ["-o", ",".join(fields)], select=positional())
REPORTS = {tool: CmdRunner(tool, **_REPORT) for tool in ("pvs", "vgs", "lvs")}


def _lv(vg, lv):
    return "%s/%s" % (vg, lv)


def _report(tool, fields, *select):
    try:
        out = REPORTS[tool]("json fields select", fields=fields, select=select).run(timeout=120)
    except CommandError as e:
        raise ThinPoolError("cannot read LVM's state (%s): %s" % (tool, e))
    try:
        rows = json.loads(out)["report"][0]
    except (ValueError, KeyError, IndexError):
        raise ThinPoolError("%s: unexpected output %r" % (tool, out[:200]))
    key = {"pvs": "pv", "vgs": "vg", "lvs": "lv"}[tool]
    return rows.get(key, [])


def _int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def dm_name(vg, lv):
    """Device-mapper's name of an LV: dashes in either name are doubled."""
    return "%s-%s" % (vg.replace("-", "--"), lv.replace("-", "--"))


# --- what exists ----------------------------------------------------------------

def volume_group(vg):
    """{"name", "size", "free", "extent_size", "pvs": [...]} or None."""
    rows = [r for r in _report("vgs", ["vg_name", "vg_size", "vg_free", "vg_extent_size"])
            if r.get("vg_name") == vg]
    if not rows:
        return None
    pvs = sorted(r["pv_name"] for r in _report("pvs", ["pv_name", "vg_name"]) if r.get("vg_name") == vg)
    r = rows[0]
    return {"name": vg, "size": _int(r["vg_size"]), "free": _int(r["vg_free"]),
            "extent_size": _int(r["vg_extent_size"]), "pvs": pvs}


LV_FIELDS = ["lv_name", "vg_name", "segtype", "lv_size", "lv_metadata_size", "data_percent",
             "metadata_percent", "chunk_size", "zero", "seg_monitor", "lv_profile", "lv_active"]


def logical_volumes(vg):
    """Every LV of ``vg`` LVM lists (hidden ones too), as report rows."""
    return [r for r in _report("lvs", LV_FIELDS, "-a", vg) if r.get("vg_name") == vg]


def pool_facts(vg, pool, vg_info=None):
    """What an operator watches on a thin pool, or None if it is not one.

    ``data_percent_of_available`` counts the VG's free space, which the
    pool's auto-extension can still take (openshift's docker_storage check)."""
    lvs = [r for r in logical_volumes(vg) if r["lv_name"] == pool]
    if not lvs or lvs[0]["segtype"] != "thin-pool":
        return None
    r = lvs[0]
    vg_info = vg_info or volume_group(vg)
    size = _int(r["lv_size"])
    data = _float(r["data_percent"])
    free = vg_info["free"] if vg_info else 0
    available = (data * size / 100.0 / (size + free) * 100.0) if data is not None and size else None
    return {
        "vg": vg, "name": pool, "size": size,
        "metadata_size": _int(r["lv_metadata_size"]),
        "chunk_size": _int(r["chunk_size"]),
        "zeroing": r["zero"] in ("zero", "1"),
        "active": r["lv_active"] == "active",
        "data_percent": data,
        "metadata_percent": _float(r["metadata_percent"]),
        "data_percent_of_available": round(available, 2) if available is not None else None,
        "vg_free": free,
        "monitored": r["seg_monitor"] == "monitored",
        "profile": r["lv_profile"] or None,
        "profile_settings": profile_settings(os.path.join(profile_dir(), r["lv_profile"] + ".profile"))
        if r["lv_profile"] else {},
        "thinpooldev": "/dev/mapper/" + dm_name(vg, pool),
    }


def facts_for_device(device, threshold=90):
    """The facts of the thin pool Docker uses (``dm.thinpooldev``, or docker
    info's Pool Name), found by its device-mapper name; a pool LVM does not
    know (loop-lvm) is read from its dm status alone. ``over_threshold``:
    data (counting the VG's free space) or metadata use at ``threshold``
    percent or more (openshift's check: 90)."""
    name = device[len("/dev/mapper/"):] if device.startswith("/dev/mapper/") else device
    facts = None
    try:
        for r in _report("lvs", ["vg_name", "lv_name", "segtype"], "-S", "segtype=thin-pool"):
            if dm_name(r["vg_name"], r["lv_name"]) == name:
                facts = pool_facts(r["vg_name"], r["lv_name"])
                break
    except ThinPoolError:
        pass        # no LVM here: the dm status still says how full it is
    if facts is None:
        facts = _dm_pool_facts(name)
    if facts.get("error"):
        facts["over_threshold"] = None
        return facts
    data = facts["data_percent_of_available"]
    data = facts["data_percent"] if data is None else data
    facts["threshold"] = threshold
    facts["over_threshold"] = bool((data or 0) >= threshold or (facts["metadata_percent"] or 0) >= threshold)
    return facts


def _dm_pool_facts(name):
    facts = {"vg": None, "name": name, "thinpooldev": "/dev/mapper/" + name}
    try:
        line = DMSETUP("status name", name=name).run(timeout=60).split()
    except CommandError as e:
        why = (e.stderr or "").strip().splitlines()
        return dict(facts, error="no thin pool %s: dmsetup status says %s" % (name, why[0] if why else e))
    # <start> <len> thin-pool <transaction id> <meta used>/<total> <data used>/<total> ...
    if len(line) < 6 or line[2] != "thin-pool":
        return dict(facts, error="%s is not a thin pool (dmsetup status: %s)" % (name, " ".join(line)))
    meta_used, meta_total = (int(x) for x in line[4].split("/"))
    data_used, data_total = (int(x) for x in line[5].split("/"))
    return dict(facts, size=int(line[1]) * 512,
                data_percent=round(100.0 * data_used / data_total, 2) if data_total else None,
                metadata_percent=round(100.0 * meta_used / meta_total, 2) if meta_total else None,
                data_percent_of_available=None, vg_free=None, monitored=None, profile=None)


def profile_dir():
    """Where LVM reads profiles (lvm.conf config/profile_dir, /etc/lvm/profile)."""
    try:
        out = LVMCONFIG("profile_dir").run(timeout=60)
    except CommandError:
        return "/etc/lvm/profile"
    value = out.strip().partition("=")[2].strip().strip('"')
    return value or "/etc/lvm/profile"


def profile_text(threshold, percent):
    return ("# Written by strata.graphdriver.thin_pool: dmeventd extends the pool by\n"
            "# thin_pool_autoextend_percent when its data or metadata use reaches\n"
            "# thin_pool_autoextend_threshold percent.\n"
            "activation {\n"
            "\tthin_pool_autoextend_threshold=%d\n"
            "\tthin_pool_autoextend_percent=%d\n"
            "}\n" % (threshold, percent))


def profile_settings(path):
    """{"thin_pool_autoextend_threshold": n, ...} from a profile file, {} if none."""
    try:
        with open(path) as f:
            return profile_settings_of(f.read())
    except OSError:
        return {}


def profile_settings_of(text):
    return dict((k, int(v)) for k, v in re.findall(r"(thin_pool_autoextend_(?:threshold|percent))\s*=\s*(\d+)", text))


def _device_bytes(dev):
    try:
        with open(dev, "rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError:
        return 0


# --- the plan -----------------------------------------------------------------

class ThinPoolPlan(object):
    """The commands (and profile file) that bring VG/POOL to what is declared."""

    def __init__(self, vg, pool="thinpool", devices=(), state="present", size=DEFAULT_SIZE,
                 metadata_size=DEFAULT_METADATA_SIZE, chunk_size=DEFAULT_CHUNK_SIZE, zero=False,
                 profile=None, autoextend_threshold=DEFAULT_THRESHOLD,
                 autoextend_percent=DEFAULT_PERCENT, monitor=True, remove_unlisted=False,
                 force=False):
        self.vg = vg
        self.pool = pool
        self.devices = list(devices or [])
        self.state = state
        self.force = force
        self.commands = []
        self.profile = None          # {"name", "path", "content"} to write
        self.created = False
        self.destroyed = False
        self.added = []
        self.removed = []
        self.unlisted = []
        self.grown = False
        self._vg = volume_group(vg)
        self._facts = pool_facts(vg, pool, self._vg) if self._vg else None
        self.before = self.snapshot(self._vg, self._facts)
        if state == "absent":
            self._absent()
            return
        _check_size("size", size)
        _check_size("metadata_size", metadata_size)
        if not 50 <= autoextend_threshold <= 100:
            raise ThinPoolError("autoextend_threshold %d: give 50 to 100 (100 turns auto-extension off)"
                                % autoextend_threshold)
        if autoextend_percent < 1:
            raise ThinPoolError("autoextend_percent %d: give at least 1" % autoextend_percent)
        self.size = size
        self.profile_name = profile or "%s-%s" % (vg, pool)
        self._volume_group(remove_unlisted)
        if self._facts is None:
            self._create_pool(size, metadata_size, chunk_size, zero)
        else:
            self._grow_pool(size)
        self._profile(autoextend_threshold, autoextend_percent)
        if monitor and (self.created or not self._facts["monitored"]):
            self.commands.append(LVCHANGE("monitor lv", lv=_lv(vg, pool)))

    # --- present ---

    def _volume_group(self, remove_unlisted):
        if not self.devices and self._vg is None:
            raise ThinPoolError("volume group %s does not exist: list the devices to make it from" % self.vg)
        members = set(os.path.realpath(d) for d in (self._vg or {}).get("pvs", []))
        new = [d for d in self.devices if os.path.realpath(d) not in members]
        for d in new:
            self.commands += blockdev.claim(d, self.force).wipe()
        if new:
            self.commands.append(PVCREATE("devices", devices=new))
            self.commands.append((VGEXTEND if self._vg else VGCREATE)("vg devices", vg=self.vg, devices=new))
            self.added = new
        listed = set(os.path.realpath(d) for d in self.devices)
        if self.devices:
            self.unlisted = [d for d in (self._vg or {}).get("pvs", []) if os.path.realpath(d) not in listed]
        if remove_unlisted and self.unlisted:
            # vgreduce refuses a PV that holds extents, with LVM's reason
            self.commands += [VGREDUCE("vg devices", vg=self.vg, devices=self.unlisted),
                              PVREMOVE("devices", devices=self.unlisted)]
            self.removed = list(self.unlisted)

    def _create_pool(self, size, metadata_size, chunk_size, zero):
        meta = self.pool + "meta"
        if self._vg and any(r["lv_name"] in (self.pool, meta) for r in logical_volumes(self.vg)):
            raise ThinPoolError("volume group %s already has a logical volume %s or %s that is not a thin pool: "
                                "name another pool, or remove it" % (self.vg, self.pool, meta))
        self.commands += [LVCREATE("wipe name vg size", name=self.pool, vg=self.vg, size=size),
                          LVCREATE("wipe name vg size", name=meta, vg=self.vg, size=metadata_size),
                          LVCONVERT("yes zero chunk_size thinpool metadata", zero=zero, chunk_size=chunk_size,
                                    thinpool=_lv(self.vg, self.pool), metadata=_lv(self.vg, meta))]
        self.created = True

    def _grow_pool(self, size):
        target = self._target_bytes(size)
        extent = self._vg["extent_size"] or 1
        # LVM rounds a size up to whole extents; a pool already that big (or
        # grown past it by dmeventd) is left alone: thin pools never shrink
        if target is not None and self._facts["size"] < -(-target // extent) * extent:
            self.commands.append(LVEXTEND("size lv", size=size, lv=_lv(self.vg, self.pool)))
            self.grown = True

    def _target_bytes(self, size):
        m = _PERCENT_VG.match(size)
        if not m:
            return parse_size(size)
        extent = self._vg["extent_size"] or 1
        extents = self._vg["size"] // extent
        for d in self.added:
            extents += max(_device_bytes(d) - PE_START, 0) // extent
        return int(extents * float(m.group(1)) / 100) * extent

    def _profile(self, threshold, percent):
        path = os.path.join(profile_dir(), self.profile_name + ".profile")
        content = profile_text(threshold, percent)
        if profile_settings(path) != {"thin_pool_autoextend_threshold": threshold,
                                      "thin_pool_autoextend_percent": percent}:
            self.profile = {"name": self.profile_name, "path": path, "content": content}
        if self.created or self.profile or self._facts["profile"] != self.profile_name:
            self.commands.append(LVCHANGE("profile lv", profile=self.profile_name, lv=_lv(self.vg, self.pool)))

    # --- absent ---

    def _absent(self):
        if self._vg is None:
            return
        if not self.force:
            raise ThinPoolError("state: absent destroys thin pool %s/%s and every layer Docker keeps in it: "
                                "set force: true to confirm" % (self.vg, self.pool))
        others = [r["lv_name"] for r in logical_volumes(self.vg) if not _part_of_pool(r["lv_name"], self.pool)]
        if self._facts is not None:
            dev = self._facts["thinpooldev"]
            held = blockdev.in_use(dev) if os.path.exists(dev) else []
            if held:
                raise ThinPoolError("thin pool %s/%s is in use (%s): stop the Docker engine and remove its "
                                    "devices first" % (self.vg, self.pool, "; ".join(held)))
            self.commands.append(LVREMOVE("force lv", lv=_lv(self.vg, self.pool)))
            self.destroyed = True
        if not others:
            # the VG held only the pool: it and its PV labels go too
            self.commands += [VGREMOVE("vg", vg=self.vg), PVREMOVE("devices", devices=self._vg["pvs"])]
            self.removed = list(self._vg["pvs"])

    # --- run and report ---

    @property
    def changed(self):
        return bool(self.commands or self.profile)

    def apply(self):
        if self.profile:
            makedirs(os.path.dirname(self.profile["path"]), 0o755)
            atomic_write(self.profile["path"], self.profile["content"], 0o644)
        for cmd in self.commands:
            try:
                cmd.run(timeout=600)
            except CommandError as e:
                raise ThinPoolError("%s; volume group %s is as the commands before left it" % (e, self.vg))
        return self.snapshot() if self.changed else self.before

    def result(self, after):
        return {"vg": self.vg, "created": self.created, "grown": self.grown, "destroyed": self.destroyed,
                "added": self.added, "removed": self.removed, "unlisted_devices": self.unlisted,
                "profile_file": self.profile, "devices": after.get("pvs", []), "pool": after.get("pool")}

    def snapshot(self, vg_info=None, facts=None):
        """The state diff mode shows: PVs, VG size and free space, the pool."""
        if vg_info is None:
            vg_info = volume_group(self.vg)
            facts = pool_facts(self.vg, self.pool, vg_info) if vg_info else None
        if vg_info is None:
            return {}
        state = {"vg": self.vg, "pvs": vg_info["pvs"], "vg_size": vg_info["size"], "vg_free": vg_info["free"],
                 "pool": None}
        state["pool"] = facts
        return state

    def planned(self):
        """What check mode expects after the run (sizes LVM decides are None)."""
        if self.state == "absent":
            if not self.before or self.removed:
                return {}
            return dict(self.before, pool=None)
        before = self.before or {"vg": self.vg, "pvs": [], "vg_size": None, "vg_free": None, "pool": None}
        state = dict(before, pvs=sorted(p for p in before["pvs"] + self.added if p not in self.removed))
        if self.added or self.removed:
            state.update(vg_size=None, vg_free=None)
        pool = dict(before["pool"] or {"vg": self.vg, "name": self.pool, "size": None,
                                       "thinpooldev": "/dev/mapper/" + dm_name(self.vg, self.pool)})
        if self.grown:
            pool["size"] = None
        pool["profile"] = self.profile_name
        if self.profile:
            pool["profile_settings"] = profile_settings_of(self.profile["content"])
        if any(c.argv[:3] == ["lvchange", "--monitor", "y"] for c in self.commands):
            pool["monitored"] = True
        state["pool"] = pool
        return state


def _part_of_pool(lv, pool):
    """The pool and the hidden LVs LVM keeps for it: [pool_tdata], [pool_tmeta],
    [lvol0_pmspare] (the spare metadata LV of the VG's pools)."""
    lv = lv.strip("[]")
    return lv in (pool, pool + "_tdata", pool + "_tmeta") or re.match(r"^lvol\d+_pmspare$", lv) is not None


def _check_size(option, size):
    if _PERCENT_VG.match(size):
        return
    if "%" in size:
        raise ThinPoolError("%s %s: give a size (10G) or a share of the volume group (95%%VG); %%FREE and "
                            "%%PVS change on every run" % (option, size))
    try:
        parse_size(size)
    except GraphDriverError:
        raise ThinPoolError("%s %r: not a size (10G, 512M) or a share of the volume group (95%%VG)"
                            % (option, size))
