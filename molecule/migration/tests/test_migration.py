"""Verify the fleet after the rollouts (molecule/migration): strata-m1 moved to btrfs with its images and
containers, strata-m2 refused part-way and put back on overlay2 as it was, strata-m3 never touched.

prepare.yml recorded what each host held in LAB/before; converge and side_effect left each rollout's task
results in LAB_ROOT/rollout-<n>.jsonl. Each host is asked through its own engine (its unix socket).
"""

import json
import os
import re

import pytest

# testinfra hands over inventory variables untemplated ("{{ lab }}/docker"),
# so the paths are rebuilt the way molecule.yml defines them.
LAB_ROOT = os.environ.get("STRATA_MOLECULE_LAB") or "/tmp/strata-mol"
SOURCE, TARGET = "overlay2", "btrfs"
MIGRATED, FAILED, UNTOUCHED = "strata-m1", "strata-m2", "strata-m3"
IMAGE = "strata/migration:2"
SPACE_REFUSAL = re.compile(r"migrating overlay2 to btrfs needs (\d+) bytes on the filesystem of (\S+), "
                           r"which has (\d+) free")


class Lab(object):
    def __init__(self, host):
        self.host = host
        self.name = host.ansible.get_variables()["inventory_hostname"]
        self.dir = "%s/%s" % (LAB_ROOT, self.name)
        self.data_root = self.dir + "/docker"
        self.daemon_json = self.dir + "/daemon.json"
        self.progress = self.dir + "/progress/migration.json"
        self.expected_driver = TARGET if self.name == MIGRATED else SOURCE

    def docker(self, *args):
        return self.host.check_output(" ".join(["docker", "-H", "unix://%s/docker.sock" % self.dir]
                                               + ["%s"] * len(args)), *args)

    def before(self, what):
        return self.host.file("%s/before/%s" % (self.dir, what)).content_string


@pytest.fixture
def lab(host):
    return Lab(host)


def task_name(record):
    return record["task"].rpartition(" : ")[2]


def rollout(n):
    with open("%s/rollout-%d.jsonl" % (LAB_ROOT, n)) as f:
        return [json.loads(line) for line in f if line.strip()]


# -- first what must not have changed, before anything below starts a container ---------------------

def test_daemon_json(lab):
    text = lab.host.file(lab.daemon_json).content_string
    if lab.name == MIGRATED:
        conf, before = json.loads(text), json.loads(lab.before("daemon.json"))
        assert conf.pop("storage-driver") == TARGET
        before.pop("storage-driver")
        assert conf == before, "the other keys are kept"
    else:
        # strata-m2: restored by the rescue; strata-m3: never touched
        assert text == lab.before("daemon.json")
        assert lab.host.check_output("stat -c '%%a %%u %%g' %s", lab.daemon_json) == lab.before("daemon.json.stat").strip()


def test_target_state_only_where_migrated(lab):
    target_home = lab.host.file("%s/%s" % (lab.data_root, TARGET))
    target_images = lab.host.file("%s/image/%s" % (lab.data_root, TARGET))
    if lab.name == MIGRATED:
        assert target_home.is_directory and target_images.is_directory
        # the source's layers stay, as the rollback
        assert lab.host.file("%s/image/%s/layerdb" % (lab.data_root, SOURCE)).is_directory
        assert lab.host.file("%s/%s" % (lab.data_root, SOURCE)).is_directory
    else:
        # strata-m2 was refused before anything was written; strata-m3 was never reached
        assert not target_home.exists and not target_images.exists


def test_progress_file(lab):
    progress = lab.host.file(lab.progress)
    if lab.name == MIGRATED:
        state = json.loads(progress.content_string)
        assert (state["source"], state["target"], state["phase"]) == (SOURCE, TARGET, "done")
        assert state["layers_done"] == state["layers_total"] == 2
        assert state["containers_done"] == state["containers_total"] == 2
        assert state["bytes_done"] == state["bytes_total"] > 4 * 1024 * 1024
    elif lab.name == FAILED:
        assert not progress.exists or json.loads(progress.content_string)["phase"] != "done"
    else:
        assert not lab.host.file(os.path.dirname(lab.progress)).exists


def test_the_rollouts(lab):
    first, second = rollout(1), rollout(2)
    mine = [r for r in first if r["host"] == lab.name]
    if lab.name == UNTOUCHED:
        # max_fail_percentage 0: the rollout stopped before strata-m3, in both runs
        assert mine == [] and [r for r in second if r["host"] == lab.name] == []
        return
    tasks = [(task_name(r), r["status"]) for r in mine]
    if lab.name == MIGRATED:
        assert ("Stop the engine", "ok") in tasks and ("Verify every image is there", "ok") in tasks
        assert not [r for r in mine if r["status"] == "failed"]
        # serial 1: migrated and verified before strata-m2's engine was stopped
        verified = [i for i, r in enumerate(first) if task_name(r) == "Verify every image is there"
                    and r["host"] == MIGRATED]
        stopped = [i for i, r in enumerate(first) if task_name(r) == "Stop the engine" and r["host"] == FAILED]
        assert verified and stopped and verified[0] < stopped[0]
        # the second rollout found it done and changed nothing
        again = [r for r in second if r["host"] == lab.name]
        assert [task_name(r) for r in again if r["status"] == "ok"][-1] == "Already on btrfs"
        assert not [r for r in again if r["result"].get("changed")]
        return
    for run in (first, second):
        mine = [r for r in run if r["host"] == lab.name]
        failed = [(task_name(r), r["result"]["msg"]) for r in mine if r["status"] == "failed"]
        # the migration refused up front; the rescue put the host back, then failed it
        assert [name for name, _ in failed] == ["Wait for the migration, printing its progress", "Say what failed"], failed
        needs, where, free = SPACE_REFUSAL.search(failed[0][1]).groups()
        assert where == lab.data_root and int(needs) > int(free)
        ran = [task_name(r) for r in mine if r["status"] == "ok"]
        assert "Restore daemon.json" in ran and "Start the engine on the old driver again" in ran
        assert "Declare in daemon.json the storage driver btrfs" not in [task_name(r) for r in mine]
        assert "daemon.json is restored and the engine runs on the old driver again" in failed[1][1]
    # the disk is still as full as prepare made it
    assert lab.host.file(lab.data_root + "/strata-filler").size > 0


# -- the engines ------------------------------------------------------------------------------------

def test_engine_runs_the_expected_driver(lab):
    driver, root = lab.docker("info", "--format", "{{.Driver}} {{.DockerRootDir}}").split()
    assert (driver, root) == (lab.expected_driver, lab.data_root)


def test_same_images_and_tags(lab):
    assert sorted(set(lab.docker("images", "-a", "-q", "--no-trunc").split())) == lab.before("images").split()
    tags = lab.docker("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
    assert sorted(tags) == lab.before("tags").splitlines()


def test_containers_carried(lab):
    listed = lab.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").splitlines()
    assert sorted(listed) == lab.before("containers").splitlines()
    for name, state in (("keeper", "exited"), ("never-started", "created")):
        assert lab.docker("inspect", "-f", "{{.Driver}} {{.State.Status}}", name).split() == [
            lab.expected_driver, state]


def test_image_runs_with_its_content(lab):
    # both layers whole: the base files, the second layer's file and its copy of the docs
    out = lab.docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                     "cat /etc/strata-version /etc/strata-motd /etc/strata-doomed; "
                     "diff -r /usr/share/doc /opt/doc-copy && echo docs-same")
    assert out.splitlines() == ["2", "base", "deleted by the keeper container", "docs-same"]


def test_keeper_shows_its_data(lab):
    # what the container wrote, changed and deleted, on whichever driver the host runs now
    out = lab.docker("start", "-a", "keeper")
    assert out + "\n" == lab.before("keeper-output")
    assert lab.docker("inspect", "-f", "{{.State.ExitCode}}", "keeper") == "0"
