"""The reference machine's skip list (tests/allowed_skips.txt) and the
plugin that enforces it (tests/support/skips.py)."""

import os
import subprocess
import sys

import pytest

from tests.support import skips

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_list_parses_and_every_rule_says_why():
    rules = skips.load()
    assert rules
    with open(skips.LIST) as f:
        lines = f.read().splitlines()
    for rule in rules:
        number = int(rule.where.rsplit(":", 1)[1])
        # the line above the rule (past the other rules of its block) is a comment
        above = [ln for ln in lines[:number - 1] if not ln.startswith("tests/")]
        assert above and above[-1].startswith("#"), "%s has no comment saying why" % rule.where


def test_a_rule_matches_node_id_and_reason():
    rule, = skips.parse("tests/x.py::test_q[vfs] ^no quota: .*CONFIG_XFS_QUOTA\n")
    assert rule.allows("tests/x.py::test_q[vfs]", "no quota: kernel without CONFIG_XFS_QUOTA")
    assert not rule.allows("tests/x.py::test_q[v]", "no quota: CONFIG_XFS_QUOTA")   # brackets literal
    assert not rule.allows("tests/x.py::test_q[vfs]", "zfs-fuse did not start")
    star, = skips.parse("tests/x.py::* anything")
    assert star.allows("tests/x.py::test_a[overlay2]", "anything at all")


def test_a_malformed_line_names_itself():
    with pytest.raises(ValueError, match=r"list:2: expected"):
        skips.parse("# why\nlonely-glob\n", "list")
    with pytest.raises(ValueError, match=r"list:1: bad reason regex"):
        skips.parse("tests/* (unclosed\n", "list")


SUITE = '''
import pytest

def test_allowed():
    pytest.skip("root reads unreadable files anyway")

def test_not_allowed():
    pytest.skip("zfs-fuse did not start")

def test_passes():
    pass
'''

CONFTEST = '''
from tests.support.skips import Checker

def pytest_configure(config):
    config.pluginmanager.register(Checker(%r), "strata-allowed-skips")
'''


def _run(tmp_path, reference):
    (tmp_path / "allowed.txt").write_text(
        "# why\n*::test_allowed ^root reads unreadable files anyway$\n")
    (tmp_path / "conftest.py").write_text(CONFTEST % str(tmp_path / "allowed.txt"))
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(skips.ENV, None)
    if reference:
        env[skips.ENV] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                          cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)


def test_an_unlisted_skip_fails_a_reference_run_and_is_named(tmp_path):
    proc = _run(tmp_path, reference=True)
    assert proc.returncode == 1, proc.stdout
    assert "test_suite.py::test_not_allowed: zfs-fuse did not start" in proc.stdout
    assert "test_allowed:" not in proc.stdout.split("skips not allowed")[1]
    assert "1 unexpected skip(s)" in proc.stdout


def test_a_developers_run_only_reports_skips(tmp_path):
    proc = _run(tmp_path, reference=False)
    assert proc.returncode == 0, proc.stdout
    assert "skips not allowed" not in proc.stdout
