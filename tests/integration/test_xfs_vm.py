"""xfs features this host's kernel may lack, under Debian's kernel in a VM.

A kernel built without CONFIG_XFS_QUOTA refuses ``-o pquota`` (the quota
tests of vfs and overlay2 ``size`` skip, saying so); one without
CONFIG_XFS_SUPPORT_V4 cannot mount the only xfs format with ftype=0 (the
d_type refusal tests skip). Debian's kernel has both: one qemu VM
(tests/support/qemu_vm.py) boots it and runs those tests on the repository
shared from the host, where the backends must mount with pquota, every
quota must hold and ftype=0 must be refused: a skip in there fails this test.
"""

import contextlib
import os
import re
import subprocess

import pytest

from tests.support.backends import quota_missing
from tests.support.loop import loop_filesystem
from tests.support.qemu_vm import run_pytest

IN_VM = os.environ.get("STRATA_IN_VM") == "1"
QUOTA_TESTS = ("tests/integration/test_conformance.py::test_set_quota[vfs]",
               "tests/integration/test_conformance.py::test_set_quota[overlay2]",
               "tests/integration/test_vfs.py::"
               "test_size_quota_exactly_where_the_kernel_has_project_quota")
# driver_info's ftype=0 test stays out: ansible under TCG adds two minutes
FTYPE0_TESTS = ("tests/integration/test_overlay2.py::test_refuses_a_filesystem_without_d_type",)


def _xfs_v4_missing():
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(loop_filesystem("xfs-noftype", 300))
        except subprocess.CalledProcessError as e:
            return "cannot mount xfs V4 (ftype=0): %s" % ((e.stderr or "").strip() or e)
    return None


def test_xfs_features_in_qemu_vm(qemu_vm):
    if IN_VM:
        pytest.skip("already inside the VM")
    missing = [r for r in (quota_missing("vfs"), _xfs_v4_missing()) if r]
    if not missing:
        pytest.skip("this kernel has xfs project quota and V4: those tests run on this host")
    tests = QUOTA_TESTS + FTYPE0_TESTS
    _, summary = run_pytest(qemu_vm(), " ".join(tests), timeout=600)
    assert re.search(r"\b%d passed\b" % len(tests), summary), summary
    assert not re.search(r"skipped|failed|error", summary), summary
