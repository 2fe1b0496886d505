"""``ansible-test sanity`` over the collection, as Ansible's own CI runs it.

ansible-test must run from ``…/ansible_collections/strata/graphdriver``;
.build holds only a symlink, whose real path ansible-test resolves, so the
collection's content (tracked files, or new ones not ignored) is copied to
a temporary tree. What is copied is what the collection ships to managed
hosts and users: plugins, roles, playbooks, meta, docs and tests/sanity.
The pytest suite (tests/unit, tests/integration, tests/support), bench/ and
scripts/ are development tools run on this machine with their own
conventions (pytest fixtures named ``_``, subprocess calls that inspect
return codes), not collection content, so ansible-test does not see them. Each sanity test gets ansible-test's own virtualenv with its
pinned requirements, installed through the configured package index.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
ANSIBLE_TEST = os.path.join(BIN, "ansible-test")
OFFLINE_GET_PIP = os.path.join(ROOT, "tests", "sanity", "get_pip_offline.py")
SKIP_DIRS = {".git", ".venv", ".build", "__pycache__", ".pytest_cache", "output"}
DEV_ONLY = ("tests/unit/", "tests/integration/", "tests/support/", "tests/__init__.py", "tests/conftest.py",
            "bench/", "scripts/", "molecule/", ".ci/", "pytest.ini")


def collection_files():
    return [p for p in _all_files() if not p.startswith(DEV_ONLY)]


def _all_files():
    if os.path.isdir(os.path.join(ROOT, ".git")) and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE, universal_newlines=True).stdout
        return [p for p in out.splitlines() if p.split("/")[0] not in SKIP_DIRS
                and os.path.isfile(os.path.join(ROOT, p))]
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found += [os.path.relpath(os.path.join(top, f), ROOT) for f in files]
    return found


def ansible_test_pip_version():
    from ansible_test._internal.python_requirements import get_venv_packages

    class _Python(object):
        version = "%d.%d" % sys.version_info[:2]

    return get_venv_packages(_Python())["pip"]


def ensure_pip_bootstrap():
    """ansible-test downloads get-pip.py from ci-files.testing.ansible.com; where that host is
    unreachable, its documented cache path gets our stand-in (only when nothing is there)."""
    version = ansible_test_pip_version()
    cache = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_"))
    if not os.path.exists(cache):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        shutil.copy(OFFLINE_GET_PIP, cache)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(ANSIBLE_TEST), reason="ansible-test is not installed in the venv")
def test_ansible_test_sanity():
    ensure_pip_bootstrap()
    tmp = tempfile.mkdtemp(prefix="strata-sanity-")
    try:
        dest = os.path.join(tmp, "ansible_collections", "strata", "graphdriver")
        for rel in collection_files():
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), target)
        env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), LC_ALL="C.UTF-8")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([ANSIBLE_TEST, "sanity", "--python", "%d.%d" % sys.version_info[:2], "--local",
                               "--color", "no"],
                              cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=3600)
        errors = [line for line in proc.stdout.splitlines()
                  if line.startswith(("ERROR:", "FATAL:")) or ": error:" in line]
        assert proc.returncode == 0, "ansible-test sanity failed:\n" + "\n".join(errors or proc.stdout.splitlines()[-60:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
