"""The molecule scenarios, each with three hosts that have their own loop disks, data-root and
dockerd; destroy leaves nothing behind.

molecule/default: the hosts converge, pass molecule's idempotence step and verify with testinfra.
molecule/migration: playbooks/migrate.yml moves them from overlay2 to btrfs host by host; the middle
host fails on purpose (its disk is too full) and is rolled back, the rollout stops before the third;
testinfra verifies images, containers and daemon.json on all three."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.dockerd import available as dockerd_unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MOLECULE = os.path.join(BIN, "molecule")
# molecule/*/molecule.yml: lab_root; per test run, so that two runs cannot meet.
LAB_ROOT = "/tmp/strata-mol-%d" % os.getpid()

pytestmark = [
    pytest.mark.root, pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(MOLECULE), reason="molecule is not installed in the venv"),
    pytest.mark.skipif(dockerd_unavailable() is not None, reason=str(dockerd_unavailable())),
    pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="btrfs-progs not installed"),
]


def molecule(*args):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build"), NO_COLOR="1", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", STRATA_MOLECULE_LAB=LAB_ROOT)
    return subprocess.run([MOLECULE] + list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=1800, check=False)


def leftovers():
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if LAB_ROOT in line.split()[4]]
    loops = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True,
                           check=False).stdout
    found += [line for line in loops.splitlines() if LAB_ROOT in line]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if LAB_ROOT.encode() in f.read():
                        found.append("process %s" % pid)
            except OSError:
                pass
    if os.path.exists(LAB_ROOT):
        found.append(LAB_ROOT)
    return found


def molecule_test(scenario, steps, passed):
    """``molecule test`` of one scenario: every step in ``steps`` succeeded, testinfra counted
    ``passed`` tests, and nothing is left behind (destroyed again if it was)."""
    assert not leftovers(), "a previous run left %s" % leftovers()
    try:
        proc = molecule("test", "--scenario-name", scenario)
        out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
        assert proc.returncode == 0, out[-6000:]
        for step in steps:
            assert re.search(r"%s (➜|>) %s: Executed: Successful" % (scenario, step), out), (step, out[-4000:])
        assert re.search(r"=+ %d passed" % passed, out), out[-4000:]
    finally:
        if leftovers():
            molecule("destroy", "--scenario-name", scenario)
    assert not leftovers(), "molecule destroy left %s" % leftovers()


def test_molecule_default_scenario():
    molecule_test("default", ("converge", "idempotence", "verify", "destroy"), 15)


def test_molecule_migration_scenario():
    # converge: the rollout failing at strata-m2, as expected; side_effect: the rollout again
    # (strata-m1 unchanged); verify: 9 testinfra tests x 3 hosts
    molecule_test("migration", ("prepare", "converge", "side_effect", "verify", "destroy"), 27)
