"""Make the repo importable as ansible_collections.strata.graphdriver.

`make test` does this through PYTHONPATH; this keeps a bare `pytest` working.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".build")
_link = os.path.join(BUILD, "ansible_collections", "strata", "graphdriver")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink(ROOT, _link)
if BUILD not in sys.path:
    sys.path.insert(0, BUILD)


def pytest_configure(config):
    # on the reference machine a skip not on tests/allowed_skips.txt fails the run
    from tests.support.skips import Checker
    config.pluginmanager.register(Checker(), "strata-allowed-skips")
