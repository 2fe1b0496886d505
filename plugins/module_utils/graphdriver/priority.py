"""Docker's default driver order on Linux, by engine version.

daemon/graphdriver/driver_linux.go ``priority``: the order changed at 23.0
(overlay2 first), aufs left at 24.0 and devicemapper at 25.0 (v20.10.24:
"btrfs,zfs,overlay2,fuse-overlayfs,aufs,overlay,devicemapper,vfs"; v26.1.5:
"overlay2,fuse-overlayfs,btrfs,zfs,vfs").
"""

_ORDERS = [
    # (first engine major version with this order, order)
    ((20, 10), ["btrfs", "zfs", "overlay2", "fuse-overlayfs", "aufs", "overlay",
                "devicemapper", "vfs"]),
    ((23, 0), ["overlay2", "fuse-overlayfs", "btrfs", "zfs", "aufs", "overlay",
               "devicemapper", "vfs"]),
    ((24, 0), ["overlay2", "fuse-overlayfs", "btrfs", "zfs", "devicemapper", "vfs"]),
    ((25, 0), ["overlay2", "fuse-overlayfs", "btrfs", "zfs", "vfs"]),
]


def parse_version(version):
    """'24.0.7', '20.10.24+dfsg1', (26, 1) -> (major, minor)."""
    if version is None:
        return None
    if isinstance(version, (tuple, list)):
        return tuple(int(x) for x in version[:2]) + ((0,) if len(version) < 2 else ())
    parts = []
    for piece in str(version).lstrip("v").split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    while len(parts) < 2:
        parts.append(0)
    return tuple(parts)


def priority(engine_version=None):
    """Docker's order for ``engine_version`` (the newest when not given)."""
    v = parse_version(engine_version)
    chosen = _ORDERS[-1][1]
    if v is not None:
        chosen = _ORDERS[0][1]
        for since, order in _ORDERS:
            if v >= since:
                chosen = order
    return list(chosen)


def removed_in(name):
    """The first engine version whose order no longer has driver ``name``
    (aufs and overlay: 24.0, devicemapper: 25.0), or None."""
    seen = False
    for since, order in _ORDERS:
        if name in order:
            seen = True
        elif seen:
            return since
    return None
