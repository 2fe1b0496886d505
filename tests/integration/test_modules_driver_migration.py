"""strata.graphdriver.driver_migration, the driver_migration role and playbooks/migrate.yml through real
ansible-playbook runs, against data-roots written by a real dockerd and verified by a real dockerd.

A dockerd on vfs builds a two-layer image and leaves a container once per module (the template); each
test gets its own copy of that data-root.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.engine import Engine
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.host_state import differences, host_state
from tests.support.playbook import HOST_PYTHON, ROOT, run_module, run_playbook

pytestmark = pytest.mark.root

ENGINE_CTL = os.path.join(ROOT, "tests", "support", "engine_ctl.sh")
MIGRATE_PLAYBOOK = os.path.join(ROOT, "playbooks", "migrate.yml")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A data-root a real dockerd on vfs wrote: the test image (two layers) and a container."""
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("template")
    data_root = str(work / "docker")
    with dockerd_support.dockerd(str(work / "d-vfs"), "vfs", data_root) as d:
        image_id = images.build_into(d, str(work))
        d.docker("create", "--name", "left-behind", "--network", "none", images.TAG)
        ids = sorted(d.docker("images", "-a", "-q", "--no-trunc").split())
    return data_root, image_id, ids


def copy_data_root(template, dest):
    # cp -a keeps owners, modes, times and xattrs: the copy is what dockerd wrote
    subprocess.run(["cp", "-a", template, dest], check=True)
    return dest


@pytest.fixture
def host(template, tmp_path):
    """(data_root, daemon_json, image_id, ids) for one test: a copy of the template, daemon.json on vfs."""
    data_root = copy_data_root(template[0], str(tmp_path / "docker"))
    conf = str(tmp_path / "daemon.json")
    with open(conf, "w") as f:
        json.dump({"data-root": data_root, "storage-driver": "vfs"}, f)
    return data_root, conf, template[1], template[2]


def tree(root):
    """The data-root, the mount table, loop devices, ZFS and reference counts
    (tests/support/host_state.py): what a check-mode or refused run must not change."""
    return host_state(trees=[root])


def test_migrates_then_idempotent(host, tmp_path):
    data_root, conf, image_id, ids = host
    # data_root and source come from daemon.json
    params = {"target": "overlay2", "daemon_json": conf}

    before = tree(data_root)
    run, plan = run_module("driver_migration", params, check=True, diff=True)
    assert run.rc == 0, run.stdout[-5000:]
    assert differences(before, tree(data_root)) == [], "check mode wrote under the data-root"
    assert plan["changed"] is True
    assert plan["source"] == "vfs" and plan["data_root"] == data_root
    assert plan["images"] == ids
    assert sorted(plan["tags"]) == sorted([images.BASE_TAG, images.TAG]) and plan["tags"][images.TAG] == image_id
    assert set(plan["tags"].values()) <= set(ids)
    assert len(plan["layers_to_copy"]) == 2 and plan["layers_present"] == [] and plan["layers_copied"] == []
    assert plan["bytes_to_copy"] > os.path.getsize(images.BUSYBOX)
    assert len(plan["containers"]) == 1, "the container made on vfs is to be carried"
    assert plan["commands"][3].startswith("carry container %s " % plan["containers"][0])
    for chain, step in zip(plan["layers_to_copy"], plan["commands"]):
        assert step.startswith("copy layer %s (" % chain) and step.endswith(" bytes) from vfs to overlay2")
    assert plan["commands"][2] == "copy image/vfs/imagedb and image/vfs/distribution to image/overlay2"
    assert plan["diff"]["before"]["target"] == {"driver": "overlay2", "images": [], "tags": []}
    assert plan["diff"]["after"]["target"]["images"] == ids

    run, res = run_module("driver_migration", params, diff=True)
    assert run.rc == 0, run.stdout[-5000:]
    assert res["changed"] is True
    assert res["layers_copied"] == plan["layers_to_copy"]
    assert res["images"] == ids and res["containers"] == res["containers_copied"] == plan["containers"]
    assert res["seconds"] > 0
    assert res["diff"]["after"]["target"]["tags"] == sorted([images.BASE_TAG, images.TAG])

    with dockerd_support.dockerd(str(tmp_path / "d-ovl"), "overlay2", data_root) as d:
        assert sorted(d.docker("images", "-a", "-q", "--no-trunc").split()) == ids
        assert d.docker("inspect", "-f", "{{.Id}}", images.TAG).strip() == image_id
        out = d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD)
        assert out == images.EXPECTED_OUTPUT
        assert d.docker("ps", "-a", "--format", "{{.Names}}").split() == ["left-behind"]

    run, again = run_module("driver_migration", params)
    assert run.rc == 0, run.stdout[-5000:]
    assert again["changed"] is False
    assert again["layers_copied"] == [] and again["layers_to_copy"] == [] and again["commands"] == []
    assert sorted(again["layers_present"]) == sorted(plan["layers_to_copy"])

    run, check = run_module("driver_migration", params, check=True)
    assert check["changed"] is False, "check mode after the migration predicts no change"

    # daemon.json now declares the target: the source is found where the other driver's state is
    with open(conf, "w") as f:
        json.dump({"data-root": data_root, "storage-driver": "overlay2"}, f)
    run, res = run_module("driver_migration", params)
    assert run.rc == 0, run
    assert res.get("source") == "vfs" and res["changed"] is False and len(res["layers_present"]) == 2, res


def test_refused_while_the_engine_runs(host, tmp_path):
    data_root, conf, _, _ = host
    with dockerd_support.dockerd(str(tmp_path / "d-running"), "vfs", data_root):
        for check in (True, False):
            run, res = run_module("driver_migration", {"target": "overlay2", "daemon_json": conf}, check=check)
            assert res["failed"] is True
            assert "Docker engine is running on %s" % data_root in res["msg"]
            assert "stop it first" in res["msg"] and "driver_migration role" in res["msg"]
    assert not os.path.exists(os.path.join(data_root, "overlay2"))
    assert not os.path.exists(os.path.join(data_root, "image", "overlay2"))


def test_remove_source_needs_force(host):
    data_root, conf, _, ids = host
    params = {"target": "overlay2", "daemon_json": conf, "remove_source": True}
    before = tree(data_root)
    run, res = run_module("driver_migration", params)
    assert res["failed"] is True
    assert "remove_source" in res["msg"] and "force: true" in res["msg"]
    assert differences(before, tree(data_root)) == []

    # with force, check mode plans carrying the container, then removing the source; nothing changes
    run, res = run_module("driver_migration", dict(params, force=True), check=True)
    assert run.rc == 0, run
    assert res["changed"] is True and len(res["containers"]) == 1
    assert differences(before, tree(data_root)) == []


def test_remove_source_with_force(host, tmp_path):
    data_root, conf, image_id, ids = host
    with dockerd_support.dockerd(str(tmp_path / "d-rm"), "vfs", data_root) as d:
        d.docker("rm", "left-behind")
    params = {"target": "overlay2", "daemon_json": conf, "remove_source": True, "force": True}
    before = tree(data_root)
    run, res = run_module("driver_migration", params, check=True)
    assert run.rc == 0, run
    assert res["changed"] is True and res["source_removed"] is False
    assert res["commands"][-1] == "remove every vfs layer, %s/vfs and %s/image/vfs" % (data_root, data_root)
    assert differences(before, tree(data_root)) == []

    run, res = run_module("driver_migration", params)
    assert run.rc == 0, run
    assert res["changed"] is True and res["source_removed"] is True
    assert len(res["layers_copied"]) == 2 and res["images"] == ids
    assert not os.path.exists(os.path.join(data_root, "image", "vfs"))
    assert not os.path.isdir(os.path.join(data_root, "vfs", "dir")) or not os.listdir(
        os.path.join(data_root, "vfs", "dir"))

    run, again = run_module("driver_migration", params)
    assert run.rc == 0, run
    assert again["changed"] is False and again["source_removed"] is False

    with dockerd_support.dockerd(str(tmp_path / "d-ovl"), "overlay2", data_root) as d:
        assert sorted(d.docker("images", "-a", "-q", "--no-trunc").split()) == ids
        out = d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD)
        assert out == images.EXPECTED_OUTPUT


def test_unsupported_target_refused_with_reason(host):
    data_root, conf, _, _ = host
    # overlay2.size needs xfs project quotas; this data-root is not on xfs with pquota
    run, res = run_module("driver_migration", {"target": "overlay2", "daemon_json": conf,
                                               "target_options": ["overlay2.size=10M"]})
    assert res["failed"] is True
    assert "cannot migrate to overlay2 here" in res["msg"]
    assert not os.path.exists(os.path.join(data_root, "overlay2"))


# -- the role and the rolling playbook ---------------------------------------------------------------

class FleetHost(object):
    """One inventory host: its own daemon.json, data-root and private dockerd (tests/support/engine_ctl.sh)."""

    def __init__(self, name, template, workdir, engine="20.10"):
        self.name = name
        self.dir = workdir
        os.makedirs(workdir)
        if engine != "20.10":
            with open(os.path.join(workdir, "engine-prefix"), "w") as f:
                f.write(dockerd_support.ENGINES[engine].prefix)
        self.data_root = copy_data_root(template, os.path.join(workdir, "docker"))
        self.conf = os.path.join(workdir, "daemon.json")
        self.progress = os.path.join(workdir, "progress", "migration.json")
        self.socket = os.path.join(workdir, "docker.sock")
        # unix socket paths are short (containerd's live under the exec-root): keep it outside workdir
        os.makedirs(dockerd_support.SHORT_BASE, exist_ok=True)
        self.exec_root = os.path.join(dockerd_support.SHORT_BASE, "m-%s-%d" % (name, os.getpid()))
        with open(self.conf, "w") as f:
            json.dump({"data-root": self.data_root, "exec-root": self.exec_root, "storage-driver": "vfs",
                       "log-level": "info"}, f, indent=2)

    def ctl(self, action):
        proc = subprocess.run([ENGINE_CTL, action, self.dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=120)
        assert proc.returncode == 0, "engine_ctl %s %s: %s" % (action, self.dir, proc.stdout)

    def stop(self):
        self.ctl("stop")
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def engine(self):
        return Engine("unix://" + self.socket)

    def image_ids(self):
        return sorted(i["Id"] for i in self.engine().get("/images/json?all=1"))

    def config(self):
        with open(self.conf) as f:
            return json.load(f)

    def inventory_line(self):
        def ctl(action):
            return json.dumps([ENGINE_CTL, action, self.dir])
        return ("%s ansible_connection=local ansible_python_interpreter=%s driver_migration_daemon_json=%s "
                "driver_migration_docker_host=unix://%s 'driver_migration_stop_command=%s' "
                "'driver_migration_start_command=%s' driver_migration_start_timeout=90 "
                "driver_migration_poll_interval=0 driver_migration_progress_file=%s"
                % (self.name, HOST_PYTHON, self.conf, self.socket, ctl("stop"), ctl("start"), self.progress))


@pytest.fixture
def fleet(template, tmp_path):
    """Two hosts on vfs with the test image, their engines running; an inventory; all stopped at the end."""
    hosts = [FleetHost(name, template[0], str(tmp_path / name)) for name in ("node1", "node2")]
    inventory = str(tmp_path / "inventory")
    with open(inventory, "w") as f:
        f.write("[docker_hosts]\n" + "\n".join(h.inventory_line() for h in hosts) + "\n")
    try:
        for h in hosts:
            h.ctl("start")
            assert h.image_ids() == template[2]
        yield hosts, inventory
    finally:
        for h in hosts:
            h.stop()
            unmount_under(h.dir, h.exec_root)


def unmount_under(*dirs):
    """What a killed dockerd may leave mounted (its data-root bind mount, shm), deepest first."""
    roots = tuple(d.rstrip("/") + "/" for d in dirs)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    for mp in reversed(points):
        if mp.startswith(roots) or mp + "/" in roots:
            subprocess.run(["umount", "-l", mp], check=False)


def task_name(record):
    """The task's own name, without the "role : " prefix Ansible adds."""
    return record["task"].rpartition(" : ")[2]


def hosts_in_order(run, task):
    """Hosts that ran a task whose name starts with ``task``, in the order they ran it."""
    return [r["host"] for r in run.records if task_name(r).startswith(task) and r["status"] != "skipped"]


def test_rolling_migration_of_a_fleet(fleet, template):
    hosts, inventory = fleet
    ids = template[2]
    confs = [open(h.conf).read() for h in hosts]
    check = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars={"target": "overlay2"}, check=True)
    assert check.rc == 0, check.stdout[-5000:]
    assert hosts_in_order(check, "Stop the engine") == []
    for h, c in zip(hosts, confs):
        # the running engine may touch its own files; what matters is that no target state appeared
        assert h.engine().info()["Driver"] == "vfs", "check mode stopped the engine"
        assert open(h.conf).read() == c
        assert not os.path.exists(os.path.join(h.data_root, "overlay2"))
        assert not os.path.exists(os.path.join(h.data_root, "image", "overlay2"))

    run = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars={"target": "overlay2"})
    assert run.rc == 0, run.stdout[-5000:]

    # serial 1: node1 is stopped, migrated and verified before node2 is stopped
    stops = [(r["host"], i) for i, r in enumerate(run.records) if task_name(r) == "Stop the engine"]
    verified = [(r["host"], i) for i, r in enumerate(run.records) if task_name(r) == "Verify every image is there"]
    assert [h for h, _ in stops] == ["node1", "node2"] and [h for h, _ in verified] == ["node1", "node2"]
    assert verified[0][1] < stops[1][1]

    # the module ran in the background; migration_wait returns its result
    copies = {r["host"]: r["result"] for r in run.records
              if task_name(r) == "Wait for the migration, printing its progress"}
    assert [len(copies[h.name]["layers_copied"]) for h in hosts] == [2, 2]
    for h in hosts:
        line = copies[h.name]["progress"]
        if line is not None:    # it was still running at a poll: what it had done then was printed
            assert re.match(r"vfs -> overlay2: \w+, layers \d/2, [\d.]+/[\d.]+ MiB, "
                            r"containers \d/\d, [\d.]+ s$", line), line
            assert "%s: %s" % (h.name, line) in run.stdout
        with open(h.progress) as f:
            final = json.load(f)
        assert final["phase"] == "done" and final["layers_done"] == final["layers_total"] == 2
        assert final["bytes_done"] == final["bytes_total"] == copies[h.name]["bytes_to_copy"]
    for h in hosts:
        assert h.engine().info()["Driver"] == "overlay2"
        assert h.image_ids() == ids
        assert h.config()["storage-driver"] == "overlay2"
        assert h.config()["exec-root"] == h.exec_root, "daemon.json's other keys are kept"

    # a second rollout finds every host done and touches nothing
    again = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars={"target": "overlay2"})
    assert again.rc == 0, again.stdout[-5000:]
    assert hosts_in_order(again, "Stop the engine") == [] and hosts_in_order(again, "Carry the images") == []
    assert hosts_in_order(again, "Already on overlay2") == ["node1", "node2"]


def fail_at_migration(first, tmp_path):
    # overlay2.size needs xfs project quotas: the migration fails after the engine was stopped,
    # before daemon.json changed
    return {"driver_migration_target_options": ["overlay2.size=10M"]}, "cannot migrate to overlay2 here"


def fail_at_start(first, tmp_path):
    # the first start (on overlay2, daemon.json rewritten) fails; the rescue's start works
    flag = str(tmp_path / "failed-once")
    once = "test -e %s || { touch %s; echo engine failed to start >&2; exit 1; }; exec %s start %s" % (
        flag, flag, ENGINE_CTL, first.dir)
    return {"driver_migration_start_command": ["sh", "-c", once]}, "engine failed to start"


@pytest.mark.parametrize("failure", [fail_at_migration, fail_at_start], ids=["at-migration", "at-start"])
def test_failed_host_rolls_back_and_stops_the_rollout(fleet, template, tmp_path, failure):
    hosts, inventory = fleet
    ids = template[2]
    first, second = hosts
    # a daemon.json of its own mode and group: the rollback must give them back
    os.chmod(first.conf, 0o640)
    os.chown(first.conf, 0, 1)
    conf_before = [open(h.conf).read() for h in hosts]
    extra, reason = failure(first, tmp_path)
    extra["target"] = "overlay2"
    run = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars=extra)
    assert run.rc != 0, run
    failed = [r for r in run.records if r["status"] == "failed" and task_name(r) == "Say what failed"]
    assert [r["host"] for r in failed] == ["node1"]
    assert reason in failed[0]["result"]["msg"] and "daemon.json is restored" in failed[0]["result"]["msg"]

    # node1 is back on vfs with its images; node2 was never touched
    assert open(first.conf).read() == conf_before[0]
    st = os.stat(first.conf)
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o640), 0, 1)
    assert first.engine().info()["Driver"] == "vfs" and first.image_ids() == ids
    assert not [r for r in run.records if r["host"] == "node2"], "the rollout went on after a failure"
    assert open(second.conf).read() == conf_before[1]
    assert second.engine().info()["Driver"] == "vfs" and second.image_ids() == ids
    assert not os.path.exists(os.path.join(second.data_root, "overlay2"))


def test_migration_wait_prints_progress_and_returns_the_jobs_result(tmp_path):
    """The role's waiting task on a job that outlasts several polls: one task, a line per change of
    the progress file, then the job's own result (here a command's), its result file removed."""
    progress = tmp_path / "progress.json"
    state = {"phase": "layers", "source": "vfs", "target": "overlay2", "layers_done": 1, "layers_total": 3,
             "bytes_done": 3 * 1048576, "bytes_total": 9 * 1048576, "containers_done": 0,
             "containers_total": 2, "current": None, "seconds": 1.5}
    progress.write_text(json.dumps(state))
    playbook = tmp_path / "wait.yml"
    playbook.write_text("""
- hosts: all
  gather_facts: false
  tasks:
    - name: A job that takes a while
      ansible.builtin.command: sh -c 'sleep 2; echo job-done'
      async: 60
      poll: 0
      register: job
    - name: Wait
      strata.graphdriver.migration_wait:
        jid: "{{ job.ansible_job_id }}"
        progress_file: %s
        interval: 0.2
      register: waited
    - name: The job's result file is gone
      ansible.builtin.stat:
        path: "{{ job.results_file }}"
      register: results_file
""" % progress)
    run = run_playbook(str(playbook))
    assert run.rc == 0, run.stdout[-3000:]
    waited = [r["result"] for r in run.records if task_name(r) == "Wait"][0]
    assert waited["finished"] and waited["stdout"] == "job-done" and waited["rc"] == 0
    assert waited["progress"] == "vfs -> overlay2: layers, layers 1/3, 3.0/9.0 MiB, containers 0/2, 1.5 s"
    assert run.stdout.count("localhost: " + waited["progress"]) == 1, "printed once, while it did not change"
    assert [r["result"]["stat"]["exists"] for r in run.records if task_name(r) == "The job's result file is gone"] \
        == [False]


def test_onto_the_containerd_store_and_back(host, tmp_path, monkeypatch):
    """target containerd: Engine 26.1 on the containerd store runs what 20.10 wrote on vfs;
    source containerd: the rollback, after which 20.10 on vfs has its container again."""
    reason = dockerd_support.available("26.1")
    if reason:
        pytest.skip(reason)
    # the managed host's containerd and ctr: Engine 26.1's, first in PATH
    monkeypatch.setenv("PATH", dockerd_support.ENGINES["26.1"].path)
    data_root, conf, image_id, ids = host
    params = {"target": "containerd", "daemon_json": conf}

    before = tree(data_root)
    run, plan = run_module("driver_migration", params, check=True)
    assert run.rc == 0, run.stdout[-5000:]
    assert differences(before, tree(data_root)) == [], "check mode wrote under the data-root"
    assert plan["changed"] is True and plan["source"] == "vfs" and plan["snapshotter"] == "overlayfs"
    assert sorted(plan["images_to_copy"]) == ids and len(plan["containers_to_copy"]) == 1
    assert plan["commands"][0].startswith("ctr images import: 2 images (2 layers")
    assert plan["commands"][1].startswith("carry container %s: lease" % plan["containers_to_copy"][0])

    run, res = run_module("driver_migration", params)
    assert run.rc == 0, run.stdout[-5000:]
    assert res["changed"] is True and res["containers_copied"] == plan["containers_to_copy"]
    # the plan now reads the containerd store through a private containerd
    # on an overlay of its root: nothing left to do, nothing written
    before = tree(data_root)
    run, replan = run_module("driver_migration", params, check=True)
    assert run.rc == 0 and replan["changed"] is False, run.stdout[-5000:]
    assert differences(before, tree(data_root)) == [], "check mode wrote into the containerd store"
    run, again = run_module("driver_migration", params)
    assert again["changed"] is False and again["commands"] == [], again

    feature = {"features": {"containerd-snapshotter": True}}
    with dockerd_support.dockerd(str(tmp_path / "d26"), None, data_root, engine="26.1", config=feature) as d:
        assert d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD) == images.EXPECTED_OUTPUT
        assert d.docker("ps", "-a", "--format", "{{.Names}}").split() == ["left-behind"]

    back = {"source": "containerd", "target": "vfs", "daemon_json": conf}
    run, plan_back = run_module("driver_migration", back, check=True)
    assert plan_back["changed"] is True and plan_back["containers"] == plan["containers_to_copy"]
    run, res_back = run_module("driver_migration", back)
    assert run.rc == 0, run.stdout[-5000:]
    assert res_back["containers_copied"] == plan["containers_to_copy"]
    with dockerd_support.dockerd(str(tmp_path / "d-vfs"), "vfs", data_root) as d:
        assert d.docker("ps", "-a", "--format", "{{.Names}}").split() == ["left-behind"]
        assert d.docker("inspect", "-f", "{{.Image}}", "left-behind").strip() == image_id


def test_playbook_rolls_a_host_onto_the_containerd_store(template, tmp_path, monkeypatch):
    """A host upgraded to Engine 26.1, still on its vfs graphdriver, goes onto the containerd image
    store with playbooks/migrate.yml -e target=containerd: images and container kept, daemon.json
    declares the feature, the engine runs overlayfs; a second run finds it there."""
    reason = dockerd_support.available("26.1")
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("PATH", dockerd_support.ENGINES["26.1"].path)
    host = FleetHost("node26", template[0], str(tmp_path / "node26"), engine="26.1")
    inventory = str(tmp_path / "inventory")
    with open(inventory, "w") as f:
        f.write("[docker_hosts]\n" + host.inventory_line() + "\n")
    try:
        host.ctl("start")
        assert host.image_ids() == template[2] and host.engine().info()["Driver"] == "vfs"
        run = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars={"target": "containerd"})
        assert run.rc == 0, run.stdout[-5000:]
        info = host.engine().info()
        assert info["Driver"] == "overlayfs"
        assert dict(info["DriverStatus"])["driver-type"] == "io.containerd.snapshotter.v1"
        assert host.config()["features"] == {"containerd-snapshotter": True}
        assert host.config()["storage-driver"] == "overlayfs"
        result = [r["result"] for r in run.records if task_name(r) == "Wait for the migration, printing its progress"][0]
        assert host.image_ids() == sorted(set(result["image_ids"].values())) and len(host.image_ids()) == 2
        names = [c["Names"] for c in host.engine().get("/containers/json?all=1")]
        assert names == [["/left-behind"]]

        again = run_playbook(MIGRATE_PLAYBOOK, inventory=inventory, extra_vars={"target": "containerd"})
        assert again.rc == 0, again.stdout[-5000:]
        assert hosts_in_order(again, "Already on containerd") == ["node26"]
        assert hosts_in_order(again, "Stop the engine") == []
    finally:
        host.stop()
        unmount_under(host.dir, host.exec_root)
