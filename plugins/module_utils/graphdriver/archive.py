"""Docker's layer tar rules: tar a tree, export changes, apply a layer (skeleton)."""

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
AUFS = "aufs"
OVERLAY = "overlay"


def tar_tree(root, include=None, whiteout_format=AUFS, on_close=None):
    raise NotImplementedError


def export_changes(root, changes, on_close=None):
    raise NotImplementedError


def apply_layer(root, stream, whiteout_format=AUFS, layer_id=None):
    raise NotImplementedError
