"""xfs project quota (vfs and overlay2 ``size``) where this kernel has none.

This host's kernel may be built without CONFIG_XFS_QUOTA (then xfs refuses
``-o pquota`` and the quota tests skip here, saying so). Debian's kernel has
it: one qemu VM (tests/support/qemu_vm.py) boots it and runs, on the
repository shared from the host, the conformance SetQuota test for vfs and
overlay2 and the vfs size test, where the backends must mount with pquota
and every quota must hold: a skip in there fails this test.
"""

import os
import re

import pytest

from tests.support.backend_vfs import xfs_quota_missing
from tests.support.qemu_vm import VM, VMUnavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_VM = os.environ.get("STRATA_IN_VM") == "1"
TESTS = ("tests/integration/test_conformance.py::test_set_quota[vfs]",
         "tests/integration/test_conformance.py::test_set_quota[overlay2]",
         "tests/integration/test_vfs.py::"
         "test_size_quota_exactly_where_the_kernel_has_project_quota")


def test_quota_in_qemu_vm():
    if IN_VM:
        pytest.skip("already inside the VM")
    missing = xfs_quota_missing()
    if missing is None:
        pytest.skip("this kernel has xfs project quota: the quota tests run on this host")
    try:
        vm = VM()
    except VMUnavailable as e:
        pytest.skip("cannot boot a VM for xfs project quota (%s): %s" % (missing, e))
    command = ("modprobe -a loop xfs overlay && STRATA_IN_VM=1 PYTHONPATH=%s/.build "
               "%s/.venv/bin/python -m pytest -p no:cacheprovider -q -rs %s"
               % (ROOT, ROOT, " ".join(TESTS)))
    with vm:
        result = vm.run(command, cwd=ROOT, timeout=600)
    out = result.stdout + result.stderr
    print("VM run: %.1fs under TCG\n%s" % (result.seconds, out))
    assert result.rc == 0, out[-6000:] + "\nconsole:\n" + result.console[-3000:]
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\b%d passed\b" % len(TESTS), summary), summary
    assert not re.search(r"skipped|failed|error", summary), summary
