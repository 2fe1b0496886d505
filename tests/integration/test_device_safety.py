"""The one refusal rule, on every path that writes to a device.

Every kind of thing a disk can hold ({dos, gpt, ext4, xfs, btrfs, swap, LVM
PV, zfs member, partitions}) and every way it can be in use ({mounted, open
exclusively}) x every writer (the backing_store role with xfs, ext4, btrfs
and zfs; btrfs_filesystem; zfs_pool; thin_pool making a volume group, and
growing one):

- without force: refused with a message naming the device and what it
  holds, no traceback, nothing mounted, the image's bytes unchanged; the
  filesystem asked for is adopted instead (never formatted);
- with force: what it holds is wiped and the writer proceeds; a device in
  use is still refused, unchanged. thin_pool's pool needs device-mapper,
  which this kernel lacks: here its forced run is checked on the devices in
  use only (refused before any LVM command), and test_thin_pool's VM tests
  make pools over wiped devices.

One ansible-playbook run per writer and per force, one inventory host per
kind, on real loop devices (tests/support/signatures.py).

An md RAID member ({a member of a stopped array, a member md holds}) needs
md, which this kernel lacks: ``test_in_qemu_vm`` runs the ``test_vm_*``
tests in the session's VM, every writer in one playbook per force (one
host per writer and device).
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

from tests.support.backends import Unavailable
from tests.support.playbook import run_playbook
from tests.support.qemu_vm import run_pytest
from tests.support.signatures import (HOLDS, IN_USE, KINDS, RAID_HOLDS, RAID_IN_USE, raid_devices, raid_unavailable,
                                      signature_templates, signed_devices)
from tests.support.zfs_fuse import _destroy_pool as destroy_pool, zfs_fuse_daemon

pytestmark = pytest.mark.root

IN_VM = os.environ.get("STRATA_IN_VM") == "1"

# writer -> (the task each host runs, the filesystem it adopts or None)
ROLE = "strata.graphdriver.backing_store"
WRITERS = {
    "role-xfs": ("role", "xfs"),
    "role-ext4": ("role", "ext4"),
    "role-btrfs": ("role", "btrfs"),
    "role-zfs": ("role", None),
    "btrfs_filesystem": ("btrfs_filesystem", "btrfs"),
    "zfs_pool": ("zfs_pool", None),
    "thin_pool": ("thin_pool", None),
    "thin_pool-grow": ("thin_pool", None),
}
# The VM has no udev and the host's /etc/lvm is not ours to write: LVM
# (and so thin_pool) reads this instead, from LVM_SYSTEM_DIR.
LVM_CONF = ("activation { udev_sync = 0\n udev_rules = 0 }\n"
            "devices { obtain_device_list_from_udev = 0 }\nbackup { backup = 0\n archive = 0 }\n")


@pytest.fixture(scope="module")
def zfs_daemon():
    try:
        with zfs_fuse_daemon() as pid:
            yield pid
    except Unavailable as e:
        pytest.skip("zfs-fuse unavailable: %s" % e)


@pytest.fixture(scope="module")
def templates(zfs_daemon, tmp_path_factory):
    with signature_templates(str(tmp_path_factory.mktemp("sig"))) as t:
        yield t


def _tasks(writer, force):
    how, fstype = WRITERS[writer]
    if how == "thin_pool":
        # making a volume group of the device, or adding it to one that exists
        devices = ["{{ grow_base }}", "{{ device }}"] if writer.endswith("-grow") else ["{{ device }}"]
        vg = "{{ grow_vg }}" if writer.endswith("-grow") else "{{ pool }}"
        return [{"name": how, "strata.graphdriver.thin_pool": {"vg": vg, "devices": devices, "force": force}}]
    if how == "role":
        variables = {
            "backing_store_fstype": fstype or "zfs",
            "backing_store_devices": ["{{ device }}"],
            "backing_store_mountpoint": "{{ mountpoint }}",
            "backing_store_fstab_path": "{{ fstab }}",
            "backing_store_zfs_pool": "{{ pool }}",
            "backing_store_zfs_pool_properties": {"cachefile": "none"},
            "backing_store_force": force,
        }
        return [{"name": "role", "ansible.builtin.include_role": {"name": ROLE}, "vars": variables}]
    if how == "btrfs_filesystem":
        params = {"devices": ["{{ device }}"], "label": "docker", "force": force}
    else:
        params = {"name": "{{ pool }}", "vdevs": [{"type": "stripe", "devices": ["{{ device }}"]}],
                  "pool_properties": {"cachefile": "none"}, "force": force}
    return [{"name": how, "strata.graphdriver." + how: params}]


def _sh(*argv):
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@contextlib.contextmanager
def _lvm(work, grow):
    """LVM_SYSTEM_DIR for thin_pool; with ``grow`` a volume group on a blank
    loop device of its own: (env, vg, its device)."""
    conf = os.path.join(work, "lvm")
    os.makedirs(conf)
    with open(os.path.join(conf, "lvm.conf"), "w") as f:
        f.write(LVM_CONF)
    env = {"LVM_SYSTEM_DIR": conf}
    if not grow:
        yield env, None, None
        return
    image = os.path.join(work, "grow-base.img")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    dev = _sh("losetup", "--find", "--show", image).stdout.strip()
    vg = "strata-safety-%d-grow" % os.getpid()
    try:
        for argv in (("pvcreate", "-q", dev), ("vgcreate", "-q", vg, dev)):
            proc = subprocess.run(argv, env=dict(os.environ, **env), stderr=subprocess.PIPE,
                                  universal_newlines=True)
            assert proc.returncode == 0, proc.stderr
        yield env, vg, dev
    finally:
        subprocess.run(["vgremove", "-f", vg], env=dict(os.environ, **env), stderr=subprocess.DEVNULL)
        _sh("wipefs", "--all", dev)
        _sh("losetup", "-d", dev)


def _our_volume_groups(env):
    """(vg, pv) of the volume groups this test's hosts may make or grow."""
    out = subprocess.run(["pvs", "--noheadings", "-o", "vg_name,pv_name"], env=dict(os.environ, **env),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    mine = "strata-safety-%d-" % os.getpid()
    return sorted(tuple(line.split()) for line in out.splitlines() if line.split()[:1]
                  and line.split()[0].startswith(mine))


@contextlib.contextmanager
def _play(writers, devs, force):
    """Run each writer on every device (one host per writer and kind, named
    ``kind`` for one writer, else ``writer--kind``); yield (run, {host:
    [failed results]}, {host: host vars}); undo all it made."""
    writers = [writers] if isinstance(writers, str) else list(writers)
    work = tempfile.mkdtemp(prefix="strata-safety-")
    try:
        with _lvm(work, any(w.endswith("-grow") for w in writers)) as (env, grow_vg, grow_base):
            groups = _our_volume_groups(env)
            with _played(work, writers, devs, force, env, grow_vg, grow_base) as played:
                yield played
                # a refused thin_pool made no volume group and grew none
                assert _our_volume_groups(env) == groups
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _played(work, writers, devs, force, env, grow_vg, grow_base):
    hosts = {}
    for writer in writers:
        for kind, d in sorted(devs.items()):
            name = kind if len(writers) == 1 else "%s--%s" % (writer, kind)
            hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                           "writer": writer, "device": d.device, "mountpoint": os.path.join(work, name, "docker"),
                           "fstab": os.path.join(work, name, "fstab"),
                           "pool": "strata-safety-%d-%d" % (os.getpid(), len(hosts)),
                           "grow_vg": grow_vg, "grow_base": grow_base}
            os.makedirs(os.path.join(work, name))
    inventory = os.path.join(work, "inventory.yml")
    with open(inventory, "w") as f:
        yaml.safe_dump({"all": {"hosts": hosts}}, f)
    # several writers: each host runs its own writer's tasks only (a refusal
    # ends that host's run, as it would on its own)
    tasks = _tasks(writers[0], force) if len(writers) == 1 else [
        dict(task, when="writer == %r" % writer) for writer in writers for task in _tasks(writer, force)]
    playbook = os.path.join(work, "play.yml")
    with open(playbook, "w") as f:
        yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}], f)
    try:
        run = run_playbook(playbook, inventory=inventory, args=["--forks", "6"], env=env)
        failed = {}
        for r in run.records:
            if r["status"] == "failed":
                failed.setdefault(r["host"], []).append(r["result"])
        yield run, failed, hosts
    finally:
        for kind, h in hosts.items():
            mp = h["mountpoint"]
            if os.path.ismount(mp):
                subprocess.run(["umount", mp], check=False)
            if subprocess.run(["zpool", "list", "-H", h["pool"]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                destroy_pool(h["pool"])
            if WRITERS[h["writer"]][0] == "thin_pool":
                subprocess.run(["vgremove", "-f", h["pool"]], env=dict(os.environ, **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _blkid_type(dev):
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev], stdout=subprocess.PIPE,
                          universal_newlines=True).stdout.strip()


def _no_traceback(result):
    # ansible-core 2.19 adds exception: "(traceback unavailable)" to every fail_json
    text = json.dumps(result)
    return "Traceback (most recent call last)" not in text and "module_stderr" not in result


def _new_mounts(devs):
    with open("/proc/self/mounts") as f:
        sources = [line.split()[0] for line in f]
    return [d.device for d in devs.values() if d.device in sources and d.kind != "mounted"]


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_refused_without_force(writer, templates, tmp_path):
    adopts = WRITERS[writer][1]
    with signed_devices(templates, str(tmp_path)) as devs:
        with _play(writer, devs, force=False) as (run, failed, hosts):
            problems = []
            for kind in KINDS:
                dev = devs[kind].device
                if kind == adopts:
                    if kind in failed:
                        problems.append("%s: the %s asked for was not adopted: %s" % (kind, kind, failed[kind]))
                    continue
                if kind not in failed:
                    problems.append("%s: not refused" % kind)
                    continue
                msg = failed[kind][0].get("msg", "")
                if dev not in msg:
                    problems.append("%s: message does not name %s: %s" % (kind, dev, msg))
                if not _no_traceback(failed[kind][0]):
                    problems.append("%s: traceback: %s" % (kind, failed[kind][0]))
                if os.path.ismount(hosts[kind]["mountpoint"]):
                    problems.append("%s: data-root mounted although refused" % kind)
            assert not problems, "\n".join(problems) + "\n%s" % run.stdout[-6000:]
            mounted_now = _new_mounts(devs)
            adopted_mount = [devs[adopts].device] if adopts and WRITERS[writer][0] == "role" else []
            assert sorted(mounted_now) == sorted(adopted_mount), mounted_now
        devs.detach()
        # A role adopting a filesystem mounts it (the kernel then writes its
        # superblock); every refused device is byte for byte as it was.
        changed = [k for k in KINDS if k != adopts and not devs[k].unchanged()]
        assert changed == [], "devices written although refused: %s" % changed
        if adopts and WRITERS[writer][0] != "role":
            assert devs[adopts].unchanged(), "adopting %s wrote to it" % adopts


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_force_proceeds_but_never_over_a_device_in_use(writer, templates, tmp_path):
    how, fstype = WRITERS[writer]
    # thin_pool's pool needs device-mapper (not here): only its refusals
    holds = () if how == "thin_pool" else HOLDS
    with signed_devices(templates, str(tmp_path), kinds=holds + IN_USE) as devs:
        with _play(writer, devs, force=True) as (run, failed, hosts):
            problems = []
            for kind in holds:
                if kind in failed:
                    problems.append("%s: forced, but failed: %s" % (kind, failed[kind][0].get("msg")))
                    continue
                dev = devs[kind].device
                if fstype:
                    if _blkid_type(dev) != fstype:
                        problems.append("%s: forced, but holds %r, not %s" % (kind, _blkid_type(dev), fstype))
                else:
                    pool = hosts[kind]["pool"]
                    status = subprocess.run(["zpool", "status", pool], stdout=subprocess.PIPE,
                                            universal_newlines=True).stdout
                    if os.path.basename(dev) not in status:
                        problems.append("%s: forced, but no pool %s on %s" % (kind, pool, dev))
                if how == "role" and not os.path.ismount(hosts[kind]["mountpoint"]):
                    problems.append("%s: forced, but the data-root is not mounted" % kind)
            for kind in IN_USE:
                if kind not in failed:
                    problems.append("%s: in use, but not refused with force" % kind)
                elif "in use" not in failed[kind][0].get("msg", "") or not _no_traceback(failed[kind][0]):
                    problems.append("%s: unclear refusal: %s" % (kind, failed[kind][0]))
            assert not problems, "\n".join(problems) + "\n%s" % run.stdout[-6000:]
        devs.detach()
        assert [k for k in IN_USE if not devs[k].unchanged()] == []


# --- md RAID members, in the VM ---------------------------------------------

def test_in_qemu_vm(qemu_vm):
    """The test_vm_* tests (md RAID members), in the session's VM."""
    if IN_VM:
        pytest.skip("already inside the VM")
    if raid_unavailable() is None:
        pytest.skip("md here: the test_vm_* tests run on this host")
    _, summary = run_pytest(qemu_vm(), "-k test_vm_ tests/integration/test_device_safety.py")
    vm_tests = sum(1 for name in globals() if name.startswith("test_vm_"))
    assert re.search(r"\b%d passed" % vm_tests, summary) and not re.search(r"skipped|fail|error", summary), summary


@pytest.fixture
def raid(tmp_path):
    reason = raid_unavailable()
    if reason:
        pytest.skip("%s; test_in_qemu_vm runs this in a VM" % reason)
    with raid_devices(str(tmp_path)) as devs:
        yield devs


def test_vm_raid_member_refused_by_every_writer(raid):
    """Every writer, on a RAID member (its array stopped) and on a member md
    holds: without force both are refused, the first naming its RAID
    signature, the second as in use; with force the held member is still
    refused; no byte of either changes."""
    problems = []
    for force in (False, True):
        devs = raid if not force else {k: raid[k] for k in RAID_IN_USE}
        with _play(sorted(WRITERS), devs, force) as (run, failed, hosts):
            for host, h in sorted(hosts.items()):
                kind = host.rpartition("--")[2]
                msg = failed[host][0].get("msg", "") if host in failed else ""
                want = ("device %s is in use (held by md" % h["device"] if kind in RAID_IN_USE
                        else "device %s holds linux_raid_member signature" % h["device"])
                if want not in msg or not _no_traceback(failed[host][0]):
                    problems.append("force=%s %s: not refused as %r: %s" % (force, host, want, failed.get(host)))
                if os.path.ismount(h["mountpoint"]):
                    problems.append("force=%s %s: data-root mounted although refused" % (force, host))
            assert not problems, "\n".join(problems) + "\n%s" % run.stdout[-6000:]
            assert _new_mounts(raid) == []
    raid.detach()
    assert [k for k in RAID_HOLDS + RAID_IN_USE if not raid[k].unchanged()] == [], "RAID members written"
