"""Unit tests keep the library's run directory (reference counts, layer
store locks) private, so they leave nothing in the host's
/run/strata-graphdriver and never disturb a host snapshot taken beside them."""

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(refcount, "RUN_DIR", str(tmp_path_factory.getbasetemp() / "run"))
