"""strata.graphdriver.thin_pool (Docker's direct-lvm recipe), through
ansible-playbook on loop devices.

Planning and refusing need no device-mapper: they run here. Creating,
growing and removing a pool need dm-thin-pool, which this kernel lacks, so
``test_in_qemu_vm`` boots one VM (tests/support/qemu_vm.py) that runs every
``test_vm_*`` test of this file: the module's life cycle, and a devicemapper
host rescued end to end (see test_vm_rescue_devicemapper_host).

Ansible under TCG costs about 15 s a playbook and 5 s a task, so each VM
test is one playbook whose task results are checked afterwards.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from tests.integration.test_migration import KEEPER, KEPT
from tests.support import backend_devicemapper, images
from tests.support import dockerd as dockerd_support
from tests.support.playbook import HOST_PYTHON, run_module, run_playbook, run_tasks
from tests.support.qemu_vm import run_pytest

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_VM = os.environ.get("STRATA_IN_VM") == "1"
REASON = backend_devicemapper.unavailable_reason()
needs_dm = pytest.mark.skipif(
    REASON is not None,
    reason="no device-mapper here (%s); test_in_qemu_vm runs this in a VM" % REASON)
MiB = 1 << 20
# The VM has no udev, and its root (the host's, over 9p) is read-only: LVM
# must neither wait for udev nor write backups under /etc/lvm.
LVM_CONF = ("activation { udev_sync = 0\n udev_rules = 0\n monitoring = 1 }\n"
            "devices { obtain_device_list_from_udev = 0 }\n"
            "backup { backup = 0\n archive = 0 }\n")


def sh(*argv, check=False):
    return subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=check)


def blkid(path):
    out = sh("blkid", "-p", "-o", "export", path).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@contextlib.contextmanager
def loop_devices(directory, sizes_mb):
    """Sparse files on loop devices; on exit every VG on them is removed,
    their PV labels wiped and the loops detached."""
    devs = []
    try:
        for i, size in enumerate(sizes_mb):
            path = os.path.join(directory, "disk%d.img" % i)
            with open(path, "wb") as f:
                f.truncate(size * MiB)
            devs.append(sh("losetup", "--find", "--show", path, check=True).stdout.strip())
        yield devs
    finally:
        for vg in sorted(set(sh("pvs", "--noheadings", "-o", "vg_name", *devs).stdout.split())):
            sh("vgremove", "-f", vg)
        for d in devs:
            sh("wipefs", "--all", d)
            sh("losetup", "-d", d)


@pytest.fixture
def vg_name():
    return "stratatp%d" % os.getpid()


@pytest.fixture
def lvm_env(tmp_path, monkeypatch):
    """LVM_SYSTEM_DIR with LVM_CONF: LVM, and so the module, read it; the
    profile directory follows it (<dir>/profile)."""
    path = str(tmp_path / "lvm")
    os.makedirs(path)
    with open(os.path.join(path, "lvm.conf"), "w") as f:
        f.write(LVM_CONF)
    monkeypatch.setenv("LVM_SYSTEM_DIR", path)
    return path


# --- on this host: planning and refusing --------------------------------------

def test_check_mode_plans_dockers_recipe(tmp_path, vg_name, lvm_env):
    with loop_devices(str(tmp_path), [300]) as (d1,):
        run, res = run_module("thin_pool", {"vg": vg_name, "devices": [d1], "chunk_size": "256K",
                                            "autoextend_threshold": 70}, check=True, diff=True)
        assert run.rc == 0, run
        assert res["changed"] is True and res["created"] is True
        assert res["commands"] == [
            "pvcreate %s" % d1,
            "vgcreate %s %s" % (vg_name, d1),
            "lvcreate --wipesignatures y -n thinpool %s -l 95%%VG" % vg_name,
            "lvcreate --wipesignatures y -n thinpoolmeta %s -l 1%%VG" % vg_name,
            "lvconvert -y --zero n -c 256K --thinpool %s/thinpool --poolmetadata %s/thinpoolmeta"
            % (vg_name, vg_name),
            "lvchange --metadataprofile %s-thinpool %s/thinpool" % (vg_name, vg_name),
            "lvchange --monitor y %s/thinpool" % vg_name,
        ]
        profile = os.path.join(lvm_env, "profile", vg_name + "-thinpool.profile")
        assert res["profile_file"]["path"] == profile
        assert "thin_pool_autoextend_threshold=70" in res["profile_file"]["content"]
        assert res["pool"]["thinpooldev"] == "/dev/mapper/%s-thinpool" % vg_name
        assert res["diff"]["before"] == {} and res["diff"]["after"]["pvs"] == [d1]
        # nothing was written: no PV label, no profile
        assert blkid(d1) == {} and not os.path.exists(profile)


def test_device_with_signature_refused(tmp_path, vg_name, lvm_env):
    with loop_devices(str(tmp_path), [64]) as (d1,):
        sh("mkfs.ext4", "-q", "-F", d1, check=True)
        before = blkid(d1)
        run, res = run_module("thin_pool", {"vg": vg_name, "devices": [d1]})
        assert res["failed"] is True
        # the collection's one rule, and its words
        assert "device %s holds ext4 filesystem" % d1 in res["msg"] and "force: true" in res["msg"]
        assert blkid(d1) == before


def test_existing_group_refusals(tmp_path, vg_name, lvm_env):
    """A volume group (LVM needs no device-mapper for one) that a pool has not
    been made in yet: a new device with a signature is refused without force,
    absent is refused without force, and planned with it."""
    with loop_devices(str(tmp_path), [64, 64]) as (d1, d2):
        sh("pvcreate", d1, check=True)
        sh("vgcreate", vg_name, d1, check=True)
        sh("mkfs.ext4", "-q", "-F", d2, check=True)
        ext4 = blkid(d2)
        run = run_tasks([
            {"name": "grow", "strata.graphdriver.thin_pool": {"vg": vg_name, "devices": [d1, d2]},
             "ignore_errors": True},
            {"name": "absent", "strata.graphdriver.thin_pool": {"vg": vg_name, "state": "absent"},
             "ignore_errors": True},
            {"name": "plan absent", "strata.graphdriver.thin_pool": {"vg": vg_name, "state": "absent",
                                                                     "force": True}, "check_mode": True},
        ])
        status = dict((x["task"], x["status"]) for x in run.records)
        assert status == {"grow": "failed", "absent": "failed", "plan absent": "ok"}, status
        grow, absent, plan = (run.by_task(n)[0] for n in ("grow", "absent", "plan absent"))
        assert "device %s holds ext4 filesystem" % d2 in grow["msg"] and "force: true" in grow["msg"]
        assert blkid(d2) == ext4
        assert "force: true" in absent["msg"]
        assert plan["changed"] is True and plan["commands"] == ["vgremove %s" % vg_name, "pvremove %s" % d1]
        assert sh("pvs", "--noheadings", "-o", "vg_name", d1).stdout.strip() == vg_name


def test_bad_size_is_a_clear_error(vg_name):
    run, res = run_module("thin_pool", {"vg": vg_name, "devices": ["/dev/null"], "size": "100%FREE"})
    assert res["failed"] is True and "%FREE" in res["msg"] and "95%VG" in res["msg"]


# --- the VM -----------------------------------------------------------------

@pytest.mark.slow
def test_in_qemu_vm(qemu_vm):
    """Every test_vm_* test, in the session's VM."""
    if IN_VM:
        pytest.skip("already inside the VM")
    if REASON is None:
        pytest.skip("device-mapper here: the test_vm_* tests run on this host")
    _, summary = run_pytest(qemu_vm(), "-k test_vm_ tests/integration/test_thin_pool.py", timeout=1500,
                            pipelining=True)
    vm_tests = sum(1 for name in globals() if name.startswith("test_vm_"))
    assert re.search(r"\b%d passed" % vm_tests, summary) and "skipped" not in summary, summary


@needs_dm
def test_vm_thin_pool_life_cycle(tmp_path, vg_name, lvm_env):
    """Create, rerun, plan a grow, grow, absent: one playbook (the refusals
    need no device-mapper and run on the host)."""
    with loop_devices(str(tmp_path), [512, 256]) as (d1, d2):
        one = {"vg": vg_name, "devices": [d1]}
        two = {"vg": vg_name, "devices": [d1, d2]}
        tasks = [("create", one, {}), ("again", one, {}), ("plan grow", two, {"check_mode": True}),
                 ("grow", two, {}), ("absent", {"vg": vg_name, "state": "absent", "force": True}, {})]
        run = run_tasks([dict({"name": n, "strata.graphdriver.thin_pool": p, "diff": True}, **extra)
                         for n, p, extra in tasks])
        assert run.rc == 0, [(x["task"], x["result"].get("msg"), x["result"].get("commands"))
                             for x in run.records if x["status"] == "failed"]
        r = dict((n, run.by_task(n)[0]) for n, p, extra in tasks)

        created = r["create"]
        assert created["changed"] is True and created["created"] is True
        assert created["commands"][:2] == ["pvcreate %s" % d1, "vgcreate %s %s" % (vg_name, d1)]
        pool = created["pool"]
        assert pool["thinpooldev"] == "/dev/mapper/%s-thinpool" % vg_name
        assert pool["chunk_size"] == 512 << 10 and pool["zeroing"] is False and pool["active"] is True
        assert pool["profile"] == vg_name + "-thinpool" and pool["monitored"] is True
        assert pool["profile_settings"] == {"thin_pool_autoextend_threshold": 80,
                                            "thin_pool_autoextend_percent": 20}
        # 95% of the group's 127 extents of 4 MiB (LVM rounds either way)
        assert _extents(pool["size"]) in (120, 121)
        assert pool["data_percent"] == 0.0 and pool["metadata_percent"] > 0
        assert pool["vg_free"] == created["diff"]["after"]["vg_free"] > 0

        assert r["again"]["changed"] is False and r["again"]["commands"] == []

        plan = r["plan grow"]
        assert plan["changed"] is True and plan["grown"] is True
        assert plan["commands"] == ["pvcreate %s" % d2, "vgextend %s %s" % (vg_name, d2),
                                    "lvextend -l 95%%VG %s/thinpool" % vg_name]
        grow = r["grow"]
        # check mode changed nothing: the grow started where create left it
        assert grow["diff"]["before"]["pvs"] == [d1]
        assert grow["diff"]["before"]["pool"]["size"] == pool["size"]
        assert grow["commands"] == plan["commands"]
        assert grow["devices"] == sorted([d1, d2])
        assert _extents(grow["pool"]["size"]) in (180, 181)      # 95% of 127 + 63

        gone = r["absent"]
        assert gone["changed"] is True and gone["destroyed"] is True
        assert gone["commands"] == ["lvremove -f %s/thinpool" % vg_name, "vgremove %s" % vg_name,
                                    "pvremove %s %s" % tuple(sorted([d1, d2]))]
        assert gone["diff"]["before"]["pool"]["size"] == grow["pool"]["size"] and gone["diff"]["after"] == {}
        assert sh("vgs", vg_name).returncode != 0
        assert blkid(d1) == {} and blkid(d2) == {}


@needs_dm
def test_vm_refuses_a_held_device(tmp_path, vg_name, lvm_env):
    """A device that device-mapper holds (a linear target over it, as a
    LUKS or multipath device would): refused without force and with it,
    as the device-safety matrix's devices in use are, and left unchanged."""
    with loop_devices(str(tmp_path), [64]) as (d1,):
        held = "strata-held-%d" % os.getpid()
        sectors = sh("blockdev", "--getsz", d1, check=True).stdout.strip()
        sh("dmsetup", "create", held, "--table", "0 %s linear %s 0" % (sectors, d1), check=True)
        try:
            assert os.listdir("/sys/class/block/%s/holders" % os.path.basename(d1))
            run = run_tasks([{"name": name, "strata.graphdriver.thin_pool": {"vg": vg_name, "devices": [d1],
                                                                             "force": force},
                              "ignore_errors": True} for name, force in (("plain", False), ("forced", True))])
            for name in ("plain", "forced"):
                res = run.by_task(name)[0]
                assert "device %s is in use" % d1 in res.get("msg", ""), (name, res)
            assert sh("vgs", vg_name).returncode != 0 and blkid(d1) == {}
        finally:
            sh("dmsetup", "remove", held)


def _extents(size):
    assert size % (4 * MiB) == 0, size
    return size // (4 * MiB)


ENGINE_CTL = os.path.join(ROOT, "tests", "support", "engine_ctl.sh")


class LabEngine(object):
    """A host's engine as tests/support/engine_ctl.sh runs it: HOSTDIR/daemon.json
    is its whole configuration, HOSTDIR/docker.sock its socket."""

    def __init__(self, hostdir, exec_root):
        self.dir = hostdir
        self.conf = os.path.join(hostdir, "daemon.json")
        self.socket = os.path.join(hostdir, "docker.sock")
        self.data_root = os.path.join(hostdir, "docker")
        with open(self.conf, "w") as f:
            json.dump({"data-root": self.data_root, "exec-root": exec_root}, f)

    def ctl(self, action):
        return [ENGINE_CTL, action, self.dir]

    def docker(self, *args):
        proc = sh("docker", "-H", "unix://" + self.socket, *args)
        assert proc.returncode == 0, "docker %s: %s" % (" ".join(args), proc.stderr)
        return proc.stdout

    def stop(self):
        sh(*self.ctl("stop"))


@needs_dm
def test_vm_rescue_devicemapper_host(tmp_path, vg_name, lvm_env):
    """The rescue a devicemapper host needs now that Engine 25 dropped the
    driver: playbooks/provision.yml makes a thin pool on a lab disk
    (backing_store role) and starts Engine 20.10 on it (storage_driver role,
    with dm.thinpooldev and deferred removal and deletion); an image and a
    container with data are made; the check playbook reports the pool and
    flags it over a threshold; playbooks/migrate.yml moves the host to
    overlay2: same image IDs, and the container starts with its data."""
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    os.makedirs(dockerd_support.SHORT_BASE, exist_ok=True)
    short = tempfile.mkdtemp(prefix="tp", dir=dockerd_support.SHORT_BASE)
    host = LabEngine(str(tmp_path), os.path.join(short, "x"))
    disk = str(tmp_path / "disk0.img")
    inventory = str(tmp_path / "inventory.yml")
    host_vars = {
        "ansible_connection": "local", "ansible_python_interpreter": HOST_PYTHON,
        "backing_store_fstype": "devicemapper", "backing_store_loop_files": [disk],
        "backing_store_loop_size": "1G", "backing_store_thin_pool_vg": vg_name,
        "storage_driver_name": "devicemapper", "storage_driver_daemon_json": host.conf,
        "storage_driver_docker_host": "unix://" + host.socket,
        # no udev in the VM: without this dockerd refuses the driver
        "storage_driver_opts": ["dm.override_udev_sync_check=true"],
        "storage_driver_restart_command": host.ctl("start"),
        "driver_migration_daemon_json": host.conf, "driver_migration_docker_host": "unix://" + host.socket,
        "driver_migration_stop_command": host.ctl("stop"), "driver_migration_start_command": host.ctl("start"),
        "driver_migration_start_timeout": 120, "driver_migration_poll_interval": 5,
        "driver_migration_progress_file": str(tmp_path / "progress.json"),
    }
    with open(inventory, "w") as f:
        json.dump({"all": {"hosts": {"dm-host": host_vars}}}, f)
    try:
        run = run_playbook("strata.graphdriver.provision", inventory=inventory)
        assert run.rc == 0, _failures(run)
        assert host.docker("info", "-f", "{{.Driver}}").strip() == "devicemapper"
        with open(host.conf) as f:
            opts = json.load(f)["storage-opts"]
        thinpooldev = "/dev/mapper/%s-thinpool" % vg_name
        assert opts == ["dm.thinpooldev=" + thinpooldev, "dm.use_deferred_removal=true",
                        "dm.use_deferred_deletion=true", "dm.fs=xfs", "dm.override_udev_sync_check=true"]
        status = dict(json.loads(host.docker("info", "-f", "{{json .DriverStatus}}")))
        assert status["Pool Name"] == "%s-thinpool" % vg_name
        assert status["Deferred Removal Enabled"] == "true" and status["Deferred Deletion Enabled"] == "true"

        image_id = images.build_into(host, str(tmp_path))
        assert host.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                           "/bin/sh", "-c", KEEPER) == "first\n"
        ids = sorted(host.docker("images", "-q", "--no-trunc").split())

        # the audit: the pool's use, and a threshold it is over (any use is over 0.01%)
        run = run_playbook("strata.graphdriver.check", inventory=inventory,
                           extra_vars={"check_data_root": "off", "check_thin_pool_threshold": 0.01})
        assert run.rc == 0, _failures(run)
        facts = run.by_task("Storage facts")[0]["thin_pool"]
        assert facts["thinpooldev"] == thinpooldev and facts["vg"] == vg_name
        assert facts["monitored"] is True and facts["profile"] == vg_name + "-thinpool"
        assert 0 < facts["data_percent"] < 90 and facts["over_threshold"] is True
        assert facts["data_percent_of_available"] < facts["data_percent"]      # the VG's free space counts
        line = run.by_task("Storage driver audit (one line per host)")[0]["msg"][0]
        assert "running=devicemapper" in line and "thin_pool=%s:" % thinpooldev in line
        assert "over 0.01%" in line

        run = run_playbook("strata.graphdriver.migrate", inventory=inventory,
                           extra_vars={"target": "overlay2",
                                       "driver_migration_source_options": ["dm.thinpooldev=" + thinpooldev]})
        assert run.rc == 0, _failures(run)
        assert host.docker("info", "-f", "{{.Driver}}").strip() == "overlay2"
        assert sorted(host.docker("images", "-q", "--no-trunc").split()) == ids
        assert host.docker("inspect", "-f", "{{.Id}}", images.TAG).strip() == image_id
        assert host.docker("start", "-a", "keeper") == KEPT
    finally:
        host.stop()
        shutil.rmtree(short, ignore_errors=True)
        _remove_lab_pool(vg_name, disk, os.path.join(host.data_root, "devicemapper"))


def _failures(run):
    return [(x["host"], x["task"], x["result"].get("msg"), x["result"].get("stderr"))
            for x in run.records if x["status"] == "failed"] or run


def _remove_lab_pool(vg, disk, home):
    """Docker's thin devices (its stop deactivates them; a failed run may
    not), the VG, the loop device."""
    backend_devicemapper.teardown(home)
    sh("vgremove", "-f", vg)
    for line in sh("losetup", "-j", disk).stdout.splitlines():
        loop = line.split(":")[0]
        sh("wipefs", "--all", loop)
        sh("losetup", "-d", loop)
