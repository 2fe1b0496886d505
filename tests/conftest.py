"""Make the repo importable as ansible_collections.strata.graphdriver.

`make test` does this through PYTHONPATH; this keeps a bare `pytest` working.
"""

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".build")
_link = os.path.join(BUILD, "ansible_collections", "strata", "graphdriver")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink(ROOT, _link)
if BUILD not in sys.path:
    sys.path.insert(0, BUILD)

# The library's run directory (reference counts, layer store locks, mount
# points) is the session's own, set before the library is imported and
# inherited by every module and playbook run: what the tests leave there
# stays out of the host's /run/strata-graphdriver, and a host snapshot sees
# only this session's counts, not those of another run beside it.
_OWN_RUN_DIR = "STRATA_GRAPHDRIVER_RUN_DIR" not in os.environ     # not a nested pytest's
RUN_DIR = os.environ.setdefault("STRATA_GRAPHDRIVER_RUN_DIR", "/run/strata-graphdriver-test-%d" % os.getpid())


def pytest_configure(config):
    # on the reference machine a skip not on tests/allowed_skips.txt fails the run
    from tests.support.skips import Checker
    config.pluginmanager.register(Checker(), "strata-allowed-skips")


def pytest_unconfigure(config):
    # removed only when nothing is mounted below it (a failed test's mount
    # is left for the next run's cleanup to find, not deleted through)
    with open("/proc/self/mountinfo") as f:
        held = any(line.split()[4].startswith(RUN_DIR + "/") for line in f)
    if _OWN_RUN_DIR and not held:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
