"""No bare OSError escapes the driver API: every driver, every contract
method, without the driver asking for it (driver.Driver wraps them)."""

import errno
import os

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import GraphDriverError, new
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.driver import Driver


class FailingDriver(Driver):
    """A test driver (not registered) whose every call meets a full disk."""

    name = "failing"

    def _fail(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(self.home, "dir", "l1"))

    create = create_read_write = remove = get = put = exists = layer_ids = references = _fail
    status = metadata = cleanup = diff = changes = apply_diff = diff_size = _fail


CALLS = [("create", ("l1",)), ("create_read_write", ("l1",)), ("remove", ("l1",)), ("get", ("l1",)),
         ("put", ("l1",)), ("exists", ("l1",)), ("diff", ("l1",)), ("changes", ("l1",)),
         ("apply_diff", ("l1", None, None)), ("diff_size", ("l1",)), ("references", ("l1",)),
         ("layer_ids", ()), ("status", ()), ("cleanup", ())]


@pytest.mark.parametrize("method, args", CALLS)
def test_every_contract_method_names_driver_call_and_path(tmp_path, method, args):
    drv = FailingDriver(str(tmp_path))
    with pytest.raises(GraphDriverError) as e:
        getattr(drv, method)(*args)
    message = str(e.value)
    assert message.startswith("failing: layer l1: " if args else "failing at %s: " % tmp_path)
    assert method in message and "No space left on device" in message and str(tmp_path / "dir" / "l1") in message
    assert isinstance(e.value.__cause__, OSError)


def test_a_real_driver_that_cannot_make_its_home_says_so(tmp_path):
    home = tmp_path / "vfs"
    home.write_text("not a directory")
    with pytest.raises(GraphDriverError) as e:
        new("vfs", str(home))
    assert "vfs at %s: cannot initialise" % home in str(e.value)
