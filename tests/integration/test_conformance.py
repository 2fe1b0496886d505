"""Docker's graphdriver conformance suite against every test backend.

One test per (driver, graphtest function); the drivers are whatever
tests/support/backends.BACKENDS holds, so a backend added there runs here
with no change to this file. A backend this machine cannot provide, or a
driver that reports NotSupported on it, is a skip with the reason.
"""

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    NotSupported, new)
from tests.support.backends import BACKENDS, Unavailable, quota_missing

from . import graphtest

DRIVERS = sorted(BACKENDS)


@pytest.fixture(params=DRIVERS)
def driver(request, tmp_path):
    """A started driver on a fresh backend; everything torn down after."""
    name = request.param
    request.node.user_properties.append(("driver", name))
    factory = BACKENDS[name]
    try:
        backend = factory(tmp_path)
        home, options = backend.__enter__()
    except Unavailable as e:
        pytest.skip("%s backend unavailable: %s" % (name, e))
    drv = None
    try:
        try:
            drv = new(name, home, options)
        except NotSupported as e:
            pytest.skip("%s not supported on its test backend: %s" % (name, e.reason))
        yield drv
    finally:
        try:
            if drv is not None:
                drv.cleanup()
        finally:
            backend.__exit__(None, None, None)


def _run(fn, *args):
    try:
        return fn(*args)
    except graphtest.Skip as e:
        pytest.skip(str(e))


def test_create_empty(driver):
    _run(graphtest.driver_test_create_empty, driver)


def test_create_base(driver):
    _run(graphtest.driver_test_create_base, driver)


def test_create_snap(driver):
    _run(graphtest.driver_test_create_snap, driver)


def test_deep_layer_read(driver):
    _run(graphtest.driver_test_deep_layer_read, driver,
         graphtest.deep_layer_count(driver.name))


def test_diff_apply_10(driver):
    _run(graphtest.driver_test_diff_apply, driver, 10)


def test_changes(driver):
    changes = _run(graphtest.driver_test_changes, driver)
    assert len(changes) == 21


def test_set_quota(driver):
    # where the backend must enforce a quota, a missing one fails the test
    missing = quota_missing(driver.name)
    try:
        graphtest.driver_test_set_quota(driver, missing is None)
    except graphtest.Skip as e:
        pytest.skip("%s (%s)" % (e, missing))
