"""Whiteout names and formats (moby pkg/archive/whiteouts.go), said once.

On the wire a layer deletes ``dir/name`` with an empty entry
``dir/.wh.name`` and makes ``dir`` opaque (hides what lower layers have
there) with ``dir/.wh..wh..opq``; other ``.wh..wh.*`` names are aufs
metadata, ``.wh..wh.plnk`` its hard link directory. The whiteout format
says how a driver keeps them on disk: the writer (archive.py) converts
back from it and the applier (unpack.py) converts to it.
"""

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
WHITEOUT_LINK_DIR = ".wh..wh.plnk"

# The same names as bytes, as paths are handled.
WHITEOUT_PREFIX_B = WHITEOUT_PREFIX.encode()
WHITEOUT_META_PREFIX_B = WHITEOUT_META_PREFIX.encode()
WHITEOUT_OPAQUE_B = WHITEOUT_OPAQUE.encode()
WHITEOUT_LINK_DIR_B = WHITEOUT_LINK_DIR.encode()

# Whiteout formats.
# Docker's UnpackLayer (the naive apply): ``.wh.X`` deletes X and
# ``.wh..wh..opq`` what the layer did not write in its directory.
AUFS = "aufs"
# Unpack with the overlay converter: a whiteout kept as a 0/0 character
# device, an opaque directory marked with OPAQUE_XATTR.
OVERLAY = "overlay"
# Unpack with no converter: ``.wh.`` entries written as the files they are
# (fuse-overlayfs reads them on disk). Applying only.
LITERAL = "literal"
FORMATS = (AUFS, OVERLAY, LITERAL)

OPAQUE_XATTR = "trusted.overlay.opaque"
