"""What a Galaxy user gets, checked as Galaxy and Ansible's CI check it.

The collection is built (``ansible-galaxy collection build``, galaxy.yml's
manifest directives) and installed from that tarball into a temporary
collections path; ``ansible-test sanity`` and ``ansible-test units`` run in
the installed copy, so they see exactly the files users get, and nothing
of the development suite. ``ansible-lint --profile production`` runs over
the repository (roles, playbooks, molecule scenarios, galaxy.yml).
Each sanity test gets ansible-test's own virtualenv with its pinned
requirements, installed through the configured package index.
"""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
ANSIBLE_TEST = os.path.join(BIN, "ansible-test")
OFFLINE_GET_PIP = os.path.join(ROOT, "tests", "sanity", "get_pip_offline.py")
PYTHON = "%d.%d" % sys.version_info[:2]

# What users need, and only that: top-level entries of the tarball.
SHIPPED = {"MANIFEST.json", "FILES.json", "README.md", "LICENSE", "meta", "plugins", "roles", "playbooks",
           "docs", "changelogs", "tests"}
MUST_SHIP = ["LICENSE", "README.md", "meta/runtime.yml", "changelogs/changelog.yaml", "changelogs/config.yaml",
             "plugins/modules/driver_migration.py", "plugins/module_utils/graphdriver/overlay2.py",
             "plugins/doc_fragments/daemon.py", "plugins/action/migration_wait.py",
             "roles/storage_driver/meta/argument_specs.yml", "playbooks/migrate.yml", "playbooks/files/lab-dockerd.sh",
             "tests/unit/test_archive.py"]


def tool_env():
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), LC_ALL="C.UTF-8")
    # only the installed copy: not the repository through .build
    env.pop("PYTHONPATH", None)
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return env


def run(argv, cwd, timeout=1800):
    return subprocess.run(argv, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, check=False)


def failures(proc):
    errors = [line for line in proc.stdout.splitlines()
              if line.startswith(("ERROR:", "FATAL:", "FAILED ")) or ": error:" in line]
    return "\n".join(errors or proc.stdout.splitlines()[-60:])


@pytest.fixture(scope="module")
def installed():
    """(tarball, path of the installed collection)."""
    tmp = tempfile.mkdtemp(prefix="strata-galaxy-")
    try:
        build = run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", tmp, ROOT], cwd=tmp)
        assert build.returncode == 0, build.stdout
        [tarball] = glob.glob(os.path.join(tmp, "strata-graphdriver-*.tar.gz"))
        install = run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p",
                       os.path.join(tmp, "collections"), tarball], cwd=tmp)
        assert install.returncode == 0, install.stdout
        yield tarball, os.path.join(tmp, "collections", "ansible_collections", "strata", "graphdriver")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ansible_test_pip_version():
    from ansible_test._internal.python_requirements import get_venv_packages

    class _Python(object):
        version = PYTHON

    return get_venv_packages(_Python())["pip"]


def ensure_pip_bootstrap():
    """ansible-test downloads get-pip.py from ci-files.testing.ansible.com; where that host is
    unreachable, its documented cache path gets our stand-in (only when nothing is there)."""
    version = ansible_test_pip_version()
    cache = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_"))
    if not os.path.exists(cache):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        shutil.copy(OFFLINE_GET_PIP, cache)


def test_tarball_holds_what_users_need(installed):
    tarball, _path = installed
    with tarfile.open(tarball) as tar:
        names = [m.name for m in tar.getmembers() if not m.isdir()]
    assert set(n.split("/")[0] for n in names) <= SHIPPED, sorted(set(n.split("/")[0] for n in names) - SHIPPED)
    assert [n for n in MUST_SHIP if n not in names] == []
    # the development suite stays in the repository: it needs root, disks, engines and its own helpers
    dev = [n for n in names if n.startswith("tests/") and not n.startswith("tests/unit/")]
    assert dev == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(ANSIBLE_TEST), reason="ansible-test is not installed in the venv")
def test_ansible_test_sanity_on_the_installed_tarball(installed):
    ensure_pip_bootstrap()
    _tarball, path = installed
    proc = run([ANSIBLE_TEST, "sanity", "--python", PYTHON, "--local", "--color", "no"], cwd=path, timeout=3600)
    assert proc.returncode == 0, "ansible-test sanity failed:\n" + failures(proc)
    assert not glob.glob(os.path.join(ROOT, "tests", "sanity", "ignore-*.txt")), "no ignore file: findings are fixed"


@pytest.mark.skipif(not os.path.exists(ANSIBLE_TEST), reason="ansible-test is not installed in the venv")
def test_ansible_test_units_on_the_installed_tarball(installed):
    _tarball, path = installed
    proc = run([ANSIBLE_TEST, "units", "--python", PYTHON, "--local", "--color", "no"], cwd=path)
    assert proc.returncode == 0, "ansible-test units failed:\n" + failures(proc)
    assert " passed" in proc.stdout


def test_ansible_lint_production_profile():
    lint = os.path.join(BIN, "ansible-lint")
    env = dict(tool_env(), ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build"))
    proc = subprocess.run([lint, "--profile", "production", "--offline", "--nocolor", "-f", "pep8"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600,
                          check=False)
    assert proc.returncode == 0 and "0 failure(s), 0 warning(s)" in proc.stdout, proc.stdout[-4000:]
