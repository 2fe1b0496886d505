"""The collection's playbooks through ansible-playbook: the fleet audit (strata.graphdriver.check)
over several local hosts with real backing filesystems, and the demo, which must leave nothing."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.dockerd import available as dockerd_unavailable
from tests.support.loop import loop_filesystem
from tests.support.playbook import ROOT, run_playbook

pytestmark = pytest.mark.root

DEMO_LAB = "/tmp/strata-demo-%d" % os.getpid()     # playbooks/demo.yml: demo_lab, per test run


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="strata-check-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_check_playbook_one_line_per_host(workdir):
    with loop_filesystem("xfs", 300) as xfs, loop_filesystem("btrfs", 300) as btrfs:
        work = workdir
        hosts = {
            "xfs-host": {"root": os.path.join(xfs, "docker"), "conf": {"storage-driver": "overlay2"}},
            "btrfs-host": {"root": os.path.join(btrfs, "docker"), "conf": {}},
            "trap-host": {"root": os.path.join(xfs, "trap"), "conf": {}},
        }
        for d in ("overlay2", "fuse-overlayfs"):
            os.makedirs(os.path.join(xfs, "trap", d, "x"))
        # a vfs store on xfs-host with a layer nothing references (a crash left it)
        os.makedirs(os.path.join(xfs, "docker", "image", "vfs", "layerdb", "sha256"))
        os.makedirs(os.path.join(xfs, "docker", "vfs", "dir", "ab" * 32))
        lines = ["[fleet]"]
        for name, h in hosts.items():
            conf = os.path.join(work, name + ".json")
            with open(conf, "w") as f:
                json.dump(h["conf"], f)
            lines.append("%s ansible_connection=local ansible_python_interpreter=/usr/bin/python3 "
                         "storage_driver_data_root=%s storage_driver_daemon_json=%s "
                         "storage_driver_docker_host=unix:///nonexistent.sock storage_driver_engine_version=20.10.24"
                         % (name, h["root"], conf))
        inventory = os.path.join(work, "inventory.ini")
        with open(inventory, "w") as f:
            f.write("\n".join(lines) + "\n")

        run = run_playbook("strata.graphdriver.check", inventory=inventory)
        assert run.rc == 0, run
        report = run.by_task("Storage driver audit (one line per host)")
        assert len(report) == 1, run
        audit = report[0]["msg"]
        assert len(audit) == 3
        by_host = dict(line.split(":", 1) for line in audit)
        assert "configured=overlay2" in by_host["xfs-host"] and "pick=overlay2" in by_host["xfs-host"]
        assert "running=no-engine" in by_host["xfs-host"] and "backing=xfs" in by_host["xfs-host"]
        assert "configured=- " in by_host["btrfs-host"] and "pick=btrfs" in by_host["btrfs-host"]
        assert "supported=btrfs," in by_host["btrfs-host"]
        assert "warnings=0" in by_host["btrfs-host"]
        assert "pick=-" in by_host["trap-host"] and "several valid graphdrivers" in by_host["trap-host"]
        assert "store=orphan=1 " in by_host["xfs-host"] and "store=healthy " in by_host["btrfs-host"]
        assert os.path.isdir(os.path.join(xfs, "docker", "vfs", "dir", "ab" * 32)), "the audit repairs nothing"

        # The same audit can fail the hosts that have warnings.
        run = run_playbook("strata.graphdriver.check", inventory=inventory,
                           extra_vars={"check_fail_on_warnings": True})
        assert run.rc != 0
        failed = [r for r in run.records if r["status"] == "failed"]
        assert [r["host"] for r in failed] == ["trap-host"]


def _leftovers():
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if DEMO_LAB in line.split()[4]]
    loops = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    found += [line for line in loops.splitlines() if DEMO_LAB in line]
    if os.path.exists(DEMO_LAB):
        found.append(DEMO_LAB)
    return found


@pytest.mark.slow
@pytest.mark.skipif(dockerd_unavailable() is not None, reason=str(dockerd_unavailable()))
def test_demo_provisions_chooses_checks_and_tears_down():
    assert not _leftovers(), "a previous demo left %s" % _leftovers()
    run = run_playbook(os.path.join(ROOT, "playbooks", "demo.yml"), extra_vars={"demo_lab": DEMO_LAB})
    assert run.rc == 0, run
    line = run.by_task("The audit line")[0]["msg"]
    assert line.startswith("localhost: configured=overlay2 running=overlay2 pick=overlay2 backing=xfs")
    layers = run.by_task("The layers")[0]["msg"]
    assert layers[0].startswith("base      sha256:")
    assert run.by_task("The container sees the base layer's file")[0]["stdout"] == "built by strata.graphdriver"
    # the headline: the engine's image and stopped container, migrated to vfs, run there
    migrated, imported, ran, kept = run.by_task("The migration")[0]["msg"]
    image_id = imported.split()[-1]
    assert image_id.startswith("sha256:") and migrated == "overlay2 -> vfs: strata-demo:1 " + image_id
    assert ran == "docker run on vfs: built by strata.graphdriver"
    assert kept == "the container's own file: kept by the container"
    assert not _leftovers(), _leftovers()


def test_provision_playbook_on_a_lab_host():
    lab = tempfile.mkdtemp(prefix="strata-prov-")
    inventory = os.path.join(lab, "inventory.yml")
    host = {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "backing_store_fstype": "btrfs", "backing_store_loop_files": [os.path.join(lab, "d0.img")],
        "backing_store_loop_size": "300M", "backing_store_mountpoint": os.path.join(lab, "docker"),
        "backing_store_fstab_path": os.path.join(lab, "fstab"),
        "storage_driver_data_root": os.path.join(lab, "docker"),
        "storage_driver_daemon_json": os.path.join(lab, "daemon.json"),
        "storage_driver_docker_host": "unix://%s/docker.sock" % lab,
        "storage_driver_engine_version": "20.10.24",
        # No engine in this test: the molecule scenario restarts and verifies real ones.
        "storage_driver_restart": False, "storage_driver_verify": False,
    }
    with open(inventory, "w") as f:
        json.dump({"all": {"hosts": {"lab-host": host}}}, f)
    try:
        run = run_playbook("strata.graphdriver.provision", inventory=inventory)
        assert run.rc == 0, run
        with open(os.path.join(lab, "daemon.json")) as f:
            assert json.load(f) == {"storage-driver": "btrfs"}
        mounts = open("/proc/self/mountinfo").read()
        assert " %s " % os.path.join(lab, "docker") in mounts
        again = run_playbook("strata.graphdriver.provision", inventory=inventory)
        assert again.rc == 0, again
        assert [r["task"] for r in again.records if r["result"].get("changed")] == []
    finally:
        teardown = os.path.join(lab, "teardown.yml")
        with open(teardown, "w") as f:
            f.write("- hosts: all\n  gather_facts: false\n  roles:\n"
                    "    - role: strata.graphdriver.backing_store\n"
                    "      vars: {backing_store_state: absent, backing_store_force: true}\n")
        down = run_playbook(teardown, inventory=inventory)
        subprocess.run(["rm", "-rf", lab], check=False)
    assert down.rc == 0, down
    assert lab not in open("/proc/self/mountinfo").read()
    assert lab not in subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True,
                                     check=False).stdout
