"""A migration killed with SIGKILL at any moment completes when run again.

A real dockerd (vfs) writes the data-root once: the test image, a created
container and one that wrote a file, plus an image of this host's
/usr/lib/python3.11 (thousands of small files, so that a kill lands inside a
layer). Each case copies it, starts ``migrate()`` to overlay2 in a child
process and kills it with SIGKILL: at the k-th progress report (phase
boundaries, after each layer and container, and every 1 MiB within a
layer), or after a delay. Then the same call again, in this process, must
complete, and the result must be what an uninterrupted migration gives:
every layer verifies against its DiffID, image/overlay2 holds what
image/vfs holds, no orphan driver layer or write set is left, the
containers name overlay2. The source is never written, killed or not.
One case is then started by a real dockerd on overlay2.
"""

import os
import signal
import subprocess
import sys

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import migrate, new
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import LayerStore
from tests.integration.test_migration import KEEPER, KEPT, containers, image_metadata
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.playbook import ROOT

pytestmark = pytest.mark.root

BIG_TAG = "strata/kill-python:1"
CHILD = r"""
import os, signal, sys, threading
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import migrate
data_root, how, at = sys.argv[1], sys.argv[2], float(sys.argv[3])
migrate.Progress.EVERY = 1 << 20  # the class migrate uses (graphdriver.progress)
reports = [0]

def progress(state):
    reports[0] += 1
    if how == "report" and reports[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)

if how == "delay":
    threading.Timer(at, os.kill, (os.getpid(), signal.SIGKILL)).start()
migrate.migrate(data_root, "vfs", "overlay2", progress=progress)
print(reports[0])
os._exit(0)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    reason = dockerd_support.available() or images.busybox_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("kill")
    data_root = str(work / "docker")
    tar = str(work / "python.tar")
    subprocess.run(["tar", "-C", "/", "-cf", tar, "usr/lib/python3.11"], check=True)
    with dockerd_support.dockerd(str(work / "d-vfs"), "vfs", data_root) as d:
        images.build_into(d, str(work))
        d.docker("import", tar, BIG_TAG)
        d.docker("create", "--name", "left-behind", "--network", "none", images.TAG)
        assert d.docker("run", "--name", "keeper", "--network", "none", images.TAG,
                        "/bin/sh", "-c", KEEPER) == "first\n"
        ids = sorted(d.docker("images", "-q", "--no-trunc").split())
    os.unlink(tar)
    return data_root, ids


def child(data_root, how, at):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".build"))
    return subprocess.run([sys.executable, "-c", CHILD, data_root, how, str(at)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300, check=False)


def source_state(data_root):
    """Every path of the vfs store with its bytes (files), target (links) and metadata."""
    out = {}
    for top in (os.path.join(data_root, "vfs"), os.path.join(data_root, "image", "vfs")):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                what = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
                if os.path.islink(path):
                    what += (os.readlink(path),)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        what += (hash(f.read()),)
                out[path] = what
    return out


@pytest.fixture
def copy(template, tmp_path):
    data_root = str(tmp_path / "docker")
    subprocess.run(["cp", "-a", template[0], data_root], check=True)
    return data_root


@pytest.fixture(scope="module")
def reports_in_a_whole_run(template, tmp_path_factory):
    """How many progress reports an uninterrupted run makes."""
    data_root = str(tmp_path_factory.mktemp("count") / "docker")
    subprocess.run(["cp", "-a", template[0], data_root], check=True)
    proc = child(data_root, "none", 0)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["rm", "-rf", data_root], check=True)
    return int(proc.stdout.split()[-1])


def assert_complete(data_root, ids):
    target = LayerStore(data_root, new("overlay2", os.path.join(data_root, "overlay2")))
    assert sorted(layer.diff_id for layer in target.layers()) == sorted(
        layer.diff_id for layer in LayerStore(data_root, new("vfs", os.path.join(data_root, "vfs"),
                                                             read_only=True), recover=False).layers())
    assert all(err is None for err in target.verify_all().values())
    assert image_metadata(data_root, "overlay2") == image_metadata(data_root, "vfs")
    assert target.orphans() == [], "a killed run left driver layers nobody references"
    assert os.listdir(os.path.join(data_root, "image", "overlay2", "layerdb", "tmp")) == []
    assert sorted(m.name for m in target.mounts()) == sorted(
        os.listdir(os.path.join(data_root, "image", "vfs", "layerdb", "mounts")))
    for name in os.listdir(os.path.join(data_root, "containers")):
        with open(os.path.join(data_root, "containers", name, "config.v2.json")) as f:
            assert '"Driver":"overlay2"' in f.read()
    plan = migrate.plan(data_root, "vfs", "overlay2")
    assert plan.layers_to_copy == [] and plan.containers_to_copy == [] and plan.images == ids


# Report points: the first (before anything is written), the early ones (inside
# the first layers), and spread over the rest up to the last ("done").
REPORT_FRACTIONS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


@pytest.mark.parametrize("fraction", REPORT_FRACTIONS)
def test_killed_at_a_report_then_run_again(template, copy, reports_in_a_whole_run, fraction):
    total = reports_in_a_whole_run
    at = max(1, round(fraction * total))
    before = source_state(copy)
    killed = child(copy, "report", at)
    assert killed.returncode == -signal.SIGKILL, (at, total, killed.stdout, killed.stderr)
    migrate.migrate(copy, "vfs", "overlay2")
    assert source_state(copy) == before, "the source was written"
    assert_complete(copy, template[1])


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_killed_after_a_delay_then_run_again(template, copy, delay):
    before = source_state(copy)
    killed = child(copy, "delay", delay)
    assert killed.returncode in (0, -signal.SIGKILL), killed.stderr
    migrate.migrate(copy, "vfs", "overlay2")
    assert source_state(copy) == before, "the source was written"
    assert_complete(copy, template[1])


def test_killed_twice_then_dockerd_starts_the_result(template, copy, tmp_path):
    child(copy, "report", 5)
    child(copy, "report", 3)
    migrate.migrate(copy, "vfs", "overlay2")
    assert_complete(copy, template[1])
    with dockerd_support.dockerd(str(tmp_path / "d-ovl"), "overlay2", copy) as d:
        assert sorted(d.docker("images", "-q", "--no-trunc").split()) == template[1]
        assert containers(d) == ["keeper", "left-behind"]
        assert d.docker("start", "-a", "keeper") == KEPT
        out = d.docker("run", "--rm", "--network", "none", images.TAG, *images.RUN_CMD)
        assert out == images.EXPECTED_OUTPUT
