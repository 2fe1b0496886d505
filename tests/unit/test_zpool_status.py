"""Reading a pool's layout from `zpool status` (kernel ZFS and zfs-fuse print it alike)."""

from ansible_collections.strata.graphdriver.plugins.module_utils._zfs_pool import parse_status, property_value, vdev_args

STATUS = """  pool: tank
 state: ONLINE
 scrub: none requested
config:

\tNAME             STATE     READ WRITE CKSUM
\ttank             ONLINE       0     0     0
\t  mirror-0       ONLINE       0     0     0
\t    /tmp/z/a     ONLINE       0     0     0
\t    /tmp/z/b     ONLINE       0     0     0
\t  sdc            ONLINE       0     0     0
\t  raidz2-2       ONLINE       0     0     0
\t    sdd          ONLINE       0     0     0
\t    sde          ONLINE       0     0     0
\t    sdf          ONLINE       0     0     0
\t    sdg          ONLINE       0     0     0
\tlogs
\t  sdh            ONLINE       0     0     0
\tcache
\t  sdi            ONLINE       0     0     0

errors: No known data errors
"""


def test_parse_status_top_level_vdevs_only():
    assert parse_status(STATUS) == [
        {"type": "mirror", "name": "mirror-0", "devices": ["/tmp/z/a", "/tmp/z/b"]},
        {"type": "stripe", "name": "sdc", "devices": ["sdc"]},
        {"type": "raidz2", "name": "raidz2-2", "devices": ["sdd", "sde", "sdf", "sdg"]},
    ]


def test_vdev_command_arguments():
    assert vdev_args({"type": "stripe", "devices": ["a"]}) == ["a"]
    assert vdev_args({"type": "raidz", "devices": ["a", "b", "c"]}) == ["raidz1", "a", "b", "c"]
    assert vdev_args({"type": "mirror", "devices": ["a", "b"]}) == ["mirror", "a", "b"]


def test_yaml_booleans_become_zfs_words():
    assert property_value(True) == "on" and property_value(False) == "off"
    assert property_value(12) == "12" and property_value("lz4") == "lz4"
