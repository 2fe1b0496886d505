"""Unit tests keep the library's run directory in their own temporary
directory: ``ansible-test units`` (tests/integration/test_sanity.py) runs
them with an environment of its own, without the session's
STRATA_GRAPHDRIVER_RUN_DIR (tests/conftest.py), and they left layer store
locks in the host's /run/strata-graphdriver."""

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(refcount, "RUN_DIR", str(tmp_path_factory.getbasetemp() / "run"))
