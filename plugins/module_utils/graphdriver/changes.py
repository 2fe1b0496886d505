"""Docker's ChangesDirs / OverlayChanges / ChangesSize (skeleton)."""


def changes_dirs(new_root, old_root):
    raise NotImplementedError


def overlay_changes(lower_dirs, upper_dir):
    raise NotImplementedError


def aufs_changes(lower_dirs, rw_dir):
    raise NotImplementedError


def changes_size(root, changes):
    raise NotImplementedError
