"""One default for the data-root everywhere: daemon.json's ``data-root``.

module_defaults with the collection's action group (meta/runtime.yml):
``group/strata.graphdriver.docker`` sets daemon_json once for every module
that reads a data-root, and each of them then finds the data-root that
daemon.json names, not /var/lib/docker. The storage_driver role, given
only daemon.json, looks there too."""

import json
import os
import shutil
import tempfile

import pytest
import yaml

from tests.support.playbook import run_playbook

pytestmark = pytest.mark.root

GROUP = "group/strata.graphdriver.docker"
LAYER = "strata-defaults-base"


@pytest.fixture
def lab():
    path = tempfile.mkdtemp(prefix="strata-defaults-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_group_module_defaults_reach_every_module(lab):
    data_root = os.path.join(lab, "docker")
    conf = os.path.join(lab, "daemon.json")
    with open(conf, "w") as f:
        json.dump({"data-root": data_root}, f)
    # what an engine on overlay2 without images leaves: an empty layer store
    os.makedirs(os.path.join(data_root, "image", "overlay2", "layerdb"))
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "module_defaults": {GROUP: {"daemon_json": conf}},
        "tasks": [
            {"name": "info", "strata.graphdriver.driver_info": {}},
            {"name": "layer", "strata.graphdriver.layer": {"driver": "overlay2", "id": LAYER}},
            {"name": "check", "strata.graphdriver.data_root_check": {}},
            {"name": "declare", "strata.graphdriver.storage_driver": {"name": "overlay2"}, "check_mode": True},
            {"name": "plan", "strata.graphdriver.driver_migration": {"target": "vfs"}, "check_mode": True},
        ],
    }]
    playbook = os.path.join(lab, "play.yml")
    with open(playbook, "w") as f:
        yaml.safe_dump(play, f, sort_keys=False)

    run = run_playbook(playbook)

    assert run.rc == 0, run
    [info], [layer], [check], [declare], [plan] = (run.by_task(n) for n in
                                                   ("info", "layer", "check", "declare", "plan"))
    assert info["data_root"] == data_root
    assert layer["home"] == os.path.join(data_root, "overlay2")
    assert os.path.isdir(os.path.join(data_root, "overlay2", LAYER, "diff"))
    assert check["data_root"] == data_root
    # the overlay2 store under daemon.json's data-root is the prior state found there
    assert declare["path"] == conf and declare["prior_state"] == ["overlay2"]
    assert plan["data_root"] == data_root and plan["source"] == "overlay2"
    assert not os.path.exists("/var/lib/docker/overlay2/" + LAYER)


def test_storage_driver_role_looks_where_daemon_json_says(lab):
    data_root = os.path.join(lab, "docker")
    conf = os.path.join(lab, "daemon.json")
    with open(conf, "w") as f:
        json.dump({"data-root": data_root}, f)
    os.makedirs(os.path.join(data_root, "overlay2", "l"))   # overlay2's prior state, there only
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"storage_driver_daemon_json": conf, "storage_driver_docker_host": "unix://%s/none.sock" % lab,
                 "storage_driver_engine_version": "20.10.24", "storage_driver_restart": False},
        "roles": ["strata.graphdriver.storage_driver"],
    }]
    playbook = os.path.join(lab, "play.yml")
    with open(playbook, "w") as f:
        yaml.safe_dump(play, f, sort_keys=False)

    run = run_playbook(playbook, check=True)

    assert run.rc == 0, run
    by_task = dict((r["task"].rpartition(" : ")[2], r["result"]) for r in run.records)
    assert by_task["What this host supports and runs"]["data_root"] == data_root
    declared = by_task["Declare the storage driver in daemon.json"]
    assert declared["prior_state"] == ["overlay2"] and declared["driver"] == "overlay2"
    with open(conf) as f:
        assert json.load(f) == {"data-root": data_root}, "check mode wrote daemon.json"
