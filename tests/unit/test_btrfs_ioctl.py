"""The btrfs ioctl numbers and argument layouts are linux/btrfs.h's (kernel
ABI; the values are what the C macros give on every Linux architecture that
uses the generic _IOC encoding)."""

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    btrfs_ioctl as ioc)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.btrfs import (
    ram_in_bytes)


def test_ioctl_numbers_match_linux_btrfs_h():
    assert ioc.IOC_SUBVOL_CREATE == 0x5000940E
    assert ioc.IOC_SNAP_DESTROY == 0x5000940F
    assert ioc.IOC_TREE_SEARCH == 0xD0009411
    assert ioc.IOC_INO_LOOKUP == 0xD0009412
    assert ioc.IOC_SNAP_CREATE_V2 == 0x50009417
    assert ioc.IOC_QUOTA_CTL == 0xC0109428
    assert ioc.IOC_QGROUP_CREATE == 0x4010942A
    assert ioc.IOC_QGROUP_LIMIT == 0x8030942B
    assert ioc.IOC_QUOTA_RESCAN_WAIT == 0x942E
    assert ioc.IOC_GET_SUBVOL_ROOTREF == 0xD000943D
    assert ioc.IOC_INO_LOOKUP_USER == 0xD000943E


def test_name_fields_are_bounded():
    import pytest
    assert len(ioc._name_field("abc", 4088)) == 4088
    with pytest.raises(OSError):
        ioc._name_field("a/b", 4088)
    with pytest.raises(OSError):
        ioc._name_field("x" * 4088, 4088)


def test_ram_in_bytes_matches_docker_units():
    import pytest
    MiB = 1024 * 1024
    assert ram_in_bytes("50M") == 50 * MiB
    assert ram_in_bytes("50mb") == 50 * MiB
    assert ram_in_bytes("1.5GiB") == 3 * 512 * MiB
    assert ram_in_bytes("10 k") == 10240
    assert ram_in_bytes("123") == 123
    with pytest.raises(ValueError):
        ram_in_bytes("50X")
