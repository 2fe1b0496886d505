"""devicemapper pieces that need no kernel: Docker's formats."""

import json

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    GraphDriverError)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    devicemapper as dm)


def test_devinfo_json_is_dockers():
    info = dm.DevInfo("abc", 7, 10 << 30, 3, initialized=True)
    # encoding/json of Docker's devInfo: these fields, this order, compact
    assert info.to_json() == ('{"device_id":7,"size":10737418240,"transaction_id":3,'
                              '"initialized":true,"deleted":false}')
    assert list(json.loads(info.to_json())) == [
        "device_id", "size", "transaction_id", "initialized", "deleted"]


@pytest.mark.parametrize("n,text", [(65536, "65.54kB"), (10 << 30, "10.74GB"),
                                    (335544320, "335.5MB"), (0, "0B"), (999, "999B")])
def test_human_size_as_docker_info(n, text):
    assert dm._human(n) == text


def test_unknown_option_is_refused_before_anything(tmp_path):
    with pytest.raises(GraphDriverError, match="Unknown option dm.nosuch"):
        dm.DeviceMapperDriver(str(tmp_path / "dm"), {"dm.nosuch": "1"})
    assert not (tmp_path / "dm").exists()


def test_bad_filesystem_is_refused(tmp_path):
    with pytest.raises(GraphDriverError, match="Unsupported filesystem btrfs"):
        dm.DeviceMapperDriver(str(tmp_path / "dm"), {"dm.fs": "btrfs"})


def test_device_id_bitmap_is_24_bit():
    drv = dm.DeviceMapperDriver.__new__(dm.DeviceMapperDriver)
    drv._id_map = bytearray((dm.MAX_DEVICE_ID + 1) // 8)
    drv.next_device_id = dm.MAX_DEVICE_ID - 1
    assert drv._next_free_device_id() == dm.MAX_DEVICE_ID
    # wraps past the 24-bit limit, and id 0 is a valid thin id as in Docker
    assert drv._next_free_device_id() == 0
    drv._mark_free(dm.MAX_DEVICE_ID)
    assert drv._is_free(dm.MAX_DEVICE_ID) and not drv._is_free(0)
