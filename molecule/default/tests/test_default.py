"""Verify each molecule host: its backing filesystem at its data-root, the fstab entry,
daemon.json, and a running engine that uses the driver Docker picks for that filesystem."""

import json
import os


# testinfra hands over inventory variables untemplated ("{{ lab }}/docker"),
# so the paths are rebuilt the way molecule.yml defines them.
LAB_ROOT = os.environ.get("STRATA_MOLECULE_LAB") or "/tmp/strata-mol"


def hostvars(host):
    v = dict(host.ansible.get_variables())
    lab = "%s/%s" % (LAB_ROOT, v["inventory_hostname"])
    v.update(backing_store_mountpoint=lab + "/docker", backing_store_fstab_path=lab + "/fstab",
             storage_driver_daemon_json=lab + "/daemon.json", storage_driver_data_root=lab + "/docker",
             storage_driver_docker_host="unix://%s/docker.sock" % lab)
    return v


def test_backing_filesystem_mounted_at_data_root(host):
    v = hostvars(host)
    mp = host.mount_point(v["backing_store_mountpoint"])
    assert mp.exists
    assert mp.filesystem == v["backing_store_fstype"]
    assert mp.device.startswith("/dev/loop")


def test_fstab_entry(host):
    v = hostvars(host)
    fstab = host.file(v["backing_store_fstab_path"]).content_string
    lines = [line.split() for line in fstab.splitlines() if line.strip()]
    entry = [f for f in lines if f[1] == v["backing_store_mountpoint"]]
    assert len(entry) == 1
    assert entry[0][0].startswith("UUID=") and entry[0][2] == v["backing_store_fstype"]
    assert "nofail" in entry[0][3]
    uuid = host.check_output("blkid -p -o value -s UUID %s", host.mount_point(v["backing_store_mountpoint"]).device)
    assert entry[0][0] == "UUID=" + uuid


def test_xfs_has_ftype_1(host):
    v = hostvars(host)
    if v["backing_store_fstype"] != "xfs":
        return
    assert "ftype=1" in host.check_output("xfs_info %s", v["backing_store_mountpoint"])


def test_daemon_json_declares_the_pick(host):
    v = hostvars(host)
    conf = json.loads(host.file(v["storage_driver_daemon_json"]).content_string)
    assert conf["storage-driver"] == v["expected_driver"]


def test_running_engine_uses_it(host):
    v = hostvars(host)
    sock = v["storage_driver_docker_host"]
    out = host.check_output("docker -H %s info --format '{{.Driver}} {{.DockerRootDir}}'", sock)
    driver, root = out.split()
    assert driver == v["expected_driver"]
    assert root == v["storage_driver_data_root"]
