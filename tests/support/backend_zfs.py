"""zfs backend: a private zfs-fuse daemon, a pool on a sparse file, and a
dataset mounted where Docker's data-root would be; the driver home is
``<data-root>/zfs``, so the driver finds its parent dataset from the mount
table as Docker does (no zfs.fsname option)."""

import os

from .backends import backend


@backend("zfs")
def zfs_backend(workdir, size_mb=512):
    # Imported here: zfs_fuse imports backends, which loads this module.
    from .zfs_fuse import zfs_fuse_pool
    with zfs_fuse_pool(directory=workdir, size_mb=size_mb) as pool:
        root = os.path.join(pool.mountpoint, "docker")
        pool.create_dataset("docker", root)
        yield os.path.join(root, "zfs"), {}
