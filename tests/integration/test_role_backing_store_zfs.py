"""roles/backing_store with ZFS (zfs-fuse here): a pool on lab files and a dataset mounted at
the data-root; a second run changes nothing; absent destroys it. The other filesystems are
covered by the molecule scenario and the demo."""

import os
import subprocess
import tempfile

import pytest

from tests.support.backends import Unavailable
from tests.support.playbook import run_tasks
from tests.support.zfs_fuse import _destroy_pool as destroy_pool, zfs_fuse_daemon

pytestmark = pytest.mark.root


def role(**variables):
    return [{"name": "backing_store", "ansible.builtin.include_role": {"name": "strata.graphdriver.backing_store"},
             "vars": variables}]


def changed(run):
    return [r["task"] for r in run.records if r["result"].get("changed")]


def test_zfs_backing_store_present_idempotent_absent():
    try:
        with zfs_fuse_daemon():
            lab = tempfile.mkdtemp(prefix="strata-bs-zfs-")
            pool = "strata-bs-%d" % os.getpid()
            files = [os.path.join(lab, "vdev0.img"), os.path.join(lab, "vdev1.img")]
            variables = dict(backing_store_fstype="zfs", backing_store_loop_files=files,
                             backing_store_loop_size="160M", backing_store_zfs_pool=pool,
                             backing_store_zfs_vdev_type="mirror",
                             backing_store_zfs_pool_properties={"cachefile": "none"},
                             backing_store_zfs_properties={"compression": "on"},
                             backing_store_mountpoint=os.path.join(lab, "docker"))
            try:
                run = run_tasks(role(**variables))
                assert run.rc == 0, run
                status = subprocess.run(["zpool", "status", pool], stdout=subprocess.PIPE,
                                        universal_newlines=True, check=True).stdout
                assert "mirror-0" in status and files[0] in status and files[1] in status
                assert os.path.ismount(os.path.join(lab, "docker"))

                again = run_tasks(role(**variables))
                assert again.rc == 0, again
                assert changed(again) == []

                refused = run_tasks(role(backing_store_state="absent", **variables))
                assert refused.rc != 0
                assert subprocess.run(["zpool", "list", "-H", pool], check=False).returncode == 0

                gone = run_tasks(role(backing_store_state="absent", backing_store_force=True, **variables))
                assert gone.rc == 0, [r["result"].get("msg") for r in gone.records if r["status"] == "failed"]
                assert subprocess.run(["zpool", "list", "-H", pool], check=False,
                                      stderr=subprocess.DEVNULL).returncode != 0
                assert not any(os.path.exists(f) for f in files)
            finally:
                if subprocess.run(["zpool", "list", "-H", pool], check=False, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0:
                    destroy_pool(pool)
                subprocess.run(["rm", "-rf", lab], check=False)
    except Unavailable as e:
        pytest.skip(str(e))
