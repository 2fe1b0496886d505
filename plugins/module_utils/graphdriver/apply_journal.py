"""The apply journal: what makes applying a layer all or nothing.

Docker leaves a half-applied layer on error; here every change the applier
(unpack.py) makes is journaled first, so that any failure puts the layer
back as it was:

* paths the layer creates are recorded (:class:`Created`) and removed on
  failure;
* paths it replaces or deletes are not deleted but renamed into a stash
  directory ``.strata-apply-<random>`` inside the layer root (inside, so the
  rename never crosses a filesystem: the root may be a btrfs subvolume or a
  mount), renamed back on failure (:class:`Stashed`) and deleted on success;
* metadata of existing directories it merges into (owner, mode, xattrs,
  times: :class:`MetadataSaved`) and the times of existing directories whose
  entries it changes (:class:`TimesSaved`) are restored on failure.

The journal is replayed backwards; directory times last, since undoing the
other entries changes them.

A crash in the middle leaves the stash directory in the root: the layer is
then half applied (Docker's layer store never registered it and removes such
layers); :func:`remove_stale_stash` deletes leftover stash directories if the
layer is to be kept anyway.
"""

import errno
import os
import stat

from .errors import GraphDriverError

STASH_PREFIX = ".strata-apply-"
STASH_PREFIX_B = STASH_PREFIX.encode()

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SavedMetadata(object):
    """Owner, mode, times and xattrs of an existing path, to restore them."""

    __slots__ = ("mode", "uid", "gid", "atime", "mtime", "xattrs")

    @classmethod
    def of(cls, path):
        st = os.lstat(path)
        s = cls()
        s.mode, s.uid, s.gid = st.st_mode, st.st_uid, st.st_gid
        s.atime, s.mtime = st.st_atime_ns, st.st_mtime_ns
        s.xattrs = None
        if not stat.S_ISLNK(st.st_mode):
            s.xattrs = {}
            try:
                for k in os.listxattr(path, follow_symlinks=False):
                    try:
                        s.xattrs[k] = os.getxattr(path, k, follow_symlinks=False)
                    except OSError:
                        pass
            except OSError:
                pass
        return s

    def restore(self, path, full=True):
        if full:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            if self.xattrs is not None:
                try:
                    current = os.listxattr(path, follow_symlinks=False)
                except OSError:
                    current = []
                for k in current:
                    if k not in self.xattrs:
                        try:
                            os.removexattr(path, k, follow_symlinks=False)
                        except OSError:
                            pass
                for k, v in self.xattrs.items():
                    try:
                        os.setxattr(path, k, v, follow_symlinks=False)
                    except OSError:
                        pass
            if not stat.S_ISLNK(self.mode):
                os.chmod(path, stat.S_IMODE(self.mode))
        os.utime(path, ns=(self.atime, self.mtime), follow_symlinks=False)


# -- journal entries: each knows how to undo itself ---------------------------

class Created(object):
    """``rel`` did not exist before this apply."""

    __slots__ = ("rel",)

    def __init__(self, rel):
        self.rel = rel

    def undo(self, path, stash):
        remove_path(path)


class Stashed(object):
    """What was at ``rel`` now sits in the stash as ``slot``."""

    __slots__ = ("rel", "slot")

    def __init__(self, rel, slot):
        self.rel, self.slot = rel, slot

    def undo(self, path, stash):
        remove_path(path)
        os.rename(stash + b"/" + self.slot, path)


class MetadataSaved(object):
    """``rel`` existed and is getting new metadata; ``saved`` is the old."""

    __slots__ = ("rel", "saved")

    def __init__(self, rel, saved):
        self.rel, self.saved = rel, saved

    def undo(self, path, stash):
        if os.path.lexists(path):
            self.saved.restore(path)


class TimesSaved(object):
    """Entries of the existing directory ``rel`` change: its old times."""

    __slots__ = ("rel", "atime", "mtime")

    def __init__(self, rel, atime, mtime):
        self.rel, self.atime, self.mtime = rel, atime, mtime

    def undo(self, path, stash):
        os.utime(path, ns=(self.atime, self.mtime), follow_symlinks=False)


class Journal(object):
    """The undo log of one apply onto ``root`` (bytes; ``root_fd`` open on it).

    ``new`` holds the paths this apply created (nothing under them needs a
    journal entry of its own), ``saved_times`` and ``saved_meta`` the paths
    whose times or metadata are saved already; the root's metadata is saved
    up front.
    """

    def __init__(self, root, root_fd):
        self.root = root
        self.root_fd = root_fd
        self.root_saved = SavedMetadata.of(root)
        self.entries = []
        self.new = set()
        self.saved_times = set()
        self.saved_meta = set()
        self.stash_name = STASH_PREFIX_B + os.urandom(8).hex().encode()
        self.stash_fd = None
        self._slots = 0

    # -- recording ----------------------------------------------------------
    def created(self, rel):
        if rel.rpartition(b"/")[0] not in self.new:
            self.entries.append(Created(rel))
        self.new.add(rel)

    def save_times(self, rel, st):
        """``st``: the lstat of directory ``rel`` before its entries change."""
        if rel in self.new or rel in self.saved_times:
            return
        self.saved_times.add(rel)
        if rel:     # the root's are in root_saved
            self.entries.append(TimesSaved(rel, st.st_atime_ns, st.st_mtime_ns))

    def save_metadata(self, rel, path):
        """``rel`` (reached as ``path``) is about to get new metadata."""
        if rel in self.new or rel in self.saved_meta:
            return
        self.saved_meta.add(rel)
        if rel:
            self.entries.append(MetadataSaved(rel, SavedMetadata.of(path)))

    def stash(self):
        """The stash directory's descriptor, made on first use."""
        if self.stash_fd is None:
            os.mkdir(self.stash_name, 0o700, dir_fd=self.root_fd)
            self.stash_fd = os.open(self.stash_name, O_DIR, dir_fd=self.root_fd)
        return self.stash_fd

    def new_slot(self):
        """A fresh name inside the stash."""
        self._slots += 1
        return b"%d" % self._slots

    def move_aside(self, rel, pfd, base, isdir):
        """Docker's RemoveAll(rel), undoable: rename ``base`` in ``pfd`` into the stash."""
        sfd = self.stash()
        slot = self.new_slot()
        os.rename(base, slot, src_dir_fd=pfd, dst_dir_fd=sfd)
        self.entries.append(Stashed(rel, slot))
        # Paths created in there are gone from the tree now.
        if rel in self.new:
            self.new.discard(rel)
            if isdir:
                # in place: the applier holds this set
                pre = rel + b"/"
                self.new.difference_update([p for p in self.new if p.startswith(pre)])

    def touched_root(self):
        """Did this apply create, replace or change anything in the root itself?"""
        return b"" in self.saved_meta or any(
            isinstance(op, (Created, Stashed)) and b"/" not in op.rel for op in self.entries)

    # -- the end ------------------------------------------------------------
    def _close_stash(self):
        if self.stash_fd is not None:
            os.close(self.stash_fd)
            self.stash_fd = None

    def commit(self, root_times=None):
        """After success: drop the stash. ``root_times`` (atime, mtime in ns):
        what the layer set on its root, if it did."""
        made = self.stash_fd is not None
        self._close_stash()
        if made:
            try:
                remove_tree_at(self.root_fd, self.stash_name)
            except OSError:
                remove_path(self.root + b"/" + self.stash_name)   # chmods its way in
        if root_times is not None:
            os.utime(self.root_fd, ns=root_times)
        elif not self.touched_root():
            # Only the stash came and went: the root looks untouched.
            os.utime(self.root_fd, ns=(self.root_saved.atime, self.root_saved.mtime))

    def rollback(self):
        """Undo everything; return the problems met (empty: all undone)."""
        errors = []
        self._close_stash()
        root = self.root
        stash = root + b"/" + self.stash_name
        times = []
        for op in reversed(self.entries):
            if isinstance(op, TimesSaved):
                times.append(op)
                continue
            try:
                op.undo(root + b"/" + op.rel, stash)
            except (OSError, GraphDriverError) as e:
                errors.append("%s: %s" % (os.fsdecode(op.rel), e))
        try:
            remove_path(stash)
        except (OSError, GraphDriverError) as e:
            errors.append("%s: %s" % (os.fsdecode(stash), e))
        for op in times:
            try:
                op.undo(root + b"/" + op.rel, stash)
            except (OSError, GraphDriverError) as e:
                errors.append("%s: %s" % (os.fsdecode(op.rel), e))
        try:
            self.root_saved.restore(root, full=b"" in self.saved_meta)
        except (OSError, GraphDriverError) as e:
            errors.append("%s: %s" % (os.fsdecode(root), e))
        return errors

    def close(self):
        self._close_stash()


def remove_path(path):
    """rm -rf of ``path`` (bytes), not following symlinks."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        from .fileutil import remove_tree
        remove_tree(path)
    else:
        os.unlink(path)


def remove_tree_at(dfd, name):
    """rm -rf of ``name`` in directory ``dfd`` without following symlinks."""
    try:
        fd = os.open(name, O_DIR, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            os.unlink(name, dir_fd=dfd)
            return
        raise
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                remove_tree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def remove_stale_stash(root):
    """Delete apply journals a crash left in ``root``; return their names."""
    root = os.fsencode(root)
    found = []
    for name in os.listdir(root):
        if name.startswith(STASH_PREFIX_B):
            remove_path(root + b"/" + name)
            found.append(os.fsdecode(name))
    return found
