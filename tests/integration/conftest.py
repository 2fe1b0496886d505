"""Integration tests: at the end, a summary of skips per driver.

A test says which driver it is about through ``user_properties``
("driver", name) (the conformance suite does); otherwise the driver is
taken from a parameter id naming one (``[overlay2]``), else from the module
name (``test_<driver>.py``, ``test_modules_<driver>.py``).
"""

import collections
import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import registered
from tests.support import dockerd as dockerd_support
from tests.support import images
from tests.support.qemu_vm import VM, VMUnavailable
from tests.support.skips import reason_of


@pytest.fixture(scope="session")
def image_archives(tmp_path_factory):
    """``image_archives(engine)``: the test image built and saved by that
    engine (tests.support.images), once per engine per session; a skip with
    the reason when that engine or busybox is missing."""
    built = {}

    def archive(engine):
        if engine not in built:
            reason = dockerd_support.available(engine) or images.busybox_available()
            if reason:
                pytest.skip(reason)
            built[engine] = images.build_image_archive(
                str(tmp_path_factory.mktemp("image-" + engine)), engine=engine)
        return built[engine]
    return archive


@pytest.fixture(scope="session")
def qemu_vm():
    """``qemu_vm()``: the session's one VM (tests/support/qemu_vm.py), booted
    by the first test that calls it and powered off after the last; a skip
    with the reason where none can boot. Each test cleans up in it what it
    made."""
    vms, reasons = [], []

    def vm():
        if not vms and not reasons:
            try:
                vms.append(VM())
            except VMUnavailable as e:
                reasons.append(str(e))
        if reasons:
            pytest.skip("cannot boot a VM: %s" % reasons[0])
        return vms[0]
    try:
        yield vm
    finally:
        for v in vms:
            v.close()


def pytest_collection_modifyitems(session, config, items):
    # The VM tests last, one after another: an idle VM still costs CPU
    # under TCG, and it stays up from the first to the last of them.
    items.sort(key=lambda item: "qemu_vm" in getattr(item, "fixturenames", ()))


def _driver_of(report):
    for key, value in getattr(report, "user_properties", ()):
        if key == "driver":
            return value
    names = registered()
    params = report.nodeid.rpartition("[")[2].rstrip("]") if "[" in report.nodeid else ""
    for name in sorted(names, key=len, reverse=True):     # fuse-overlayfs before overlay
        if params == name or params.startswith(name + "-") or params.endswith("-" + name):
            return name
    module = os.path.basename(report.nodeid.split("::", 1)[0])
    stem = module[len("test_"):-len(".py")] if module.startswith("test_") else module
    for name in names:
        if stem == name.replace("-", "_") or stem.endswith("_" + name.replace("-", "_")):
            return name
    return "(other)"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    by_driver = collections.defaultdict(collections.Counter)
    for report in skipped:
        by_driver[_driver_of(report)][reason_of(report)] += 1
    terminalreporter.section("skips per driver")
    for name in sorted(by_driver):
        total = sum(by_driver[name].values())
        terminalreporter.write_line("%s: %d skipped" % (name, total))
        for reason, count in by_driver[name].most_common():
            terminalreporter.write_line("    %d x %s" % (count, reason))
