"""What changed between two trees, as Docker computes it (pkg/archive/changes*.go).

* :func:`changes_dirs` — ``ChangesDirs``: walk both trees together; a pair
  with the same name, inode and (parent) device is pruned unseen (Docker
  reads the inode from getdents, so copied-up or snapshotted trees skip
  whole subtrees without an lstat); otherwise lstat both sides and compare
  mode, owner, rdev and, for non-directories, size and mtime (equal in the
  same second when either side has no nanoseconds: layers come from tars
  with whole seconds), and ``security.capability``. A directory holding a
  change is itself reported changed (the root never is).
* :func:`overlay_changes` / :func:`aufs_changes` — ``OverlayChanges`` /
  ``AUFSChanges``: walk only the upper layer, whiteouts are deletions.
* :func:`changes_size` — ``ChangesSize``.

Results are sorted by path (Docker sorts them before exporting).
"""

import os
import stat

from .driver import Change, ADD, CHANGE, DELETE
from .errors import GraphDriverError

CAPABILITY_XATTR = "security.capability"
OPAQUE_XATTR = "trusted.overlay.opaque"
_S_IFDIR = stat.S_IFDIR


def _cap(path):
    # listxattr first: most files have no xattr at all, and a failing
    # getxattr costs an exception per file.
    try:
        if CAPABILITY_XATTR not in os.listxattr(path, follow_symlinks=False):
            return None
        return os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _entries(fd):
    """name -> d_ino of a directory, from getdents alone."""
    with os.scandir(fd) as it:
        return {e.name: e.inode() for e in it}


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _stat_different(o, n):
    # Docker's statDifferent. Note its directory test is "mode & S_IFDIR",
    # which also holds for block devices and sockets; matched on purpose.
    if (o.st_mode != n.st_mode or o.st_uid != n.st_uid or o.st_gid != n.st_gid
            or o.st_rdev != n.st_rdev):
        return True
    if o.st_mode & _S_IFDIR != _S_IFDIR:
        if o.st_size != n.st_size:
            return True
        if o.st_mtime_ns != n.st_mtime_ns:
            os_, on = divmod(o.st_mtime_ns, 1000000000)
            ns_, nn = divmod(n.st_mtime_ns, 1000000000)
            if os_ != ns_ or (on and nn):
                return True
    return False


class _Walker(object):

    def __init__(self, new_root, old_root):
        self.new_root = new_root
        self.old_root = old_root
        self.out = []

    def _all_added(self, npath, rel):
        """Every entry below the new directory ``npath`` is an Add."""
        out = self.out
        with os.scandir(npath) as it:
            for e in it:
                crel = rel + "/" + e.name
                out.append((crel, ADD))
                if e.is_dir(follow_symlinks=False):
                    self._all_added(e.path, crel)

    def walk(self, rel, nst, ost):
        """Compare the directories at ``rel`` (nst/ost their lstat, or None).

        Return True when something below ``rel`` changed.
        """
        out = self.out
        mark = len(out)
        npath = self.new_root + rel
        opath = self.old_root + rel
        ndir = nst is not None and stat.S_ISDIR(nst.st_mode)
        odir = ost is not None and stat.S_ISDIR(ost.st_mode)
        if not ndir:
            return False    # a non-directory: old children are not reported
        # stat relative to open directories: one path component per lookup.
        nfd = os.open(npath, _O_DIR)
        ofd = None
        try:
            new_names = _entries(nfd)
            if odir:
                ofd = os.open(opath, _O_DIR)
                old_names = _entries(ofd)
            else:
                old_names = {}
            return self._compare(rel, npath, opath, nst, ost, nfd, ofd, new_names,
                                 old_names, mark)
        finally:
            os.close(nfd)
            if ofd is not None:
                os.close(ofd)

    def _compare(self, rel, npath, opath, nst, ost, nfd, ofd, new_names, old_names, mark):
        out = self.out
        same_dev = ost is not None and nst.st_dev == ost.st_dev
        lstat = os.stat
        for name, ino in new_names.items():
            crel = rel + "/" + name
            oino = old_names.pop(name, None)
            if oino is not None and same_dev and oino == ino:
                continue    # same inode on the same device: pruned unseen
            try:
                cn = lstat(name, dir_fd=nfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            co = None
            if oino is not None:
                try:
                    co = lstat(name, dir_fd=ofd, follow_symlinks=False)
                except FileNotFoundError:
                    co = None
            if co is None:
                out.append((crel, ADD))
                if stat.S_ISDIR(cn.st_mode):
                    self._all_added(npath + "/" + name, crel)
                continue
            changed = _stat_different(co, cn) or (
                _cap(npath + "/" + name) != _cap(opath + "/" + name))
            at = len(out)
            if changed:
                out.append((crel, CHANGE))
            if stat.S_ISDIR(cn.st_mode):
                if self.walk(crel, cn, co) and not changed:
                    # Docker inserts the parent's C before its children.
                    out.insert(at, (crel, CHANGE))
        for name in old_names:
            out.append((rel + "/" + name, DELETE))
        return len(out) > mark


def _sorted_changes(raw):
    # Go compares the paths' bytes.
    fsencode = os.fsencode
    raw.sort(key=lambda c: fsencode(c[0]))
    return [Change(os.fsdecode(p), k) for p, k in raw]


def changes_dirs(new_root, old_root):
    """Docker's ChangesDirs(new, old): a sorted list of Change.

    ``old_root`` None or '' means an empty old tree (everything is an Add).
    """
    # str paths (surrogate-escaped) on this hot path: scandir of a
    # descriptor yields str names, and encoding each would cost more.
    new_s = os.path.abspath(os.fsdecode(new_root))
    try:
        nst = os.lstat(new_s)
        if old_root:
            old_s = os.path.abspath(os.fsdecode(old_root))
            ost = os.lstat(old_s)
        else:
            old_s, ost = "/nonexistent-empty-tree", None
        w = _Walker(new_s, old_s)
        if ost is None:
            w._all_added(new_s, "")
        else:
            w.walk("", nst, ost)
    except RecursionError:
        raise GraphDriverError("changes of %s: tree too deep" % new_root)
    except OSError as e:
        raise GraphDriverError("changes of %s against %s: %s: %s"
                               % (new_root, old_root or "nothing", e.filename, e.strerror))
    return _sorted_changes(w.out)


def _same_fs_time(a_ns, b_ns):
    if a_ns == b_ns:
        return True
    a, an = divmod(a_ns, 1000000000)
    b, bn = divmod(b_ns, 1000000000)
    return a == b and (an == 0 or bn == 0)


def _layer_changes(layers, rw, deleted, skip):
    """Docker's changes(): walk ``rw`` only, compare with lower ``layers``."""
    rw_b = os.fsencode(os.path.abspath(rw))
    layers_b = [os.fsencode(os.path.abspath(p)) for p in layers]
    out = []
    changed_dirs = set()

    def visit(rel, st):
        if skip is not None and skip(rel):
            return
        path = rw_b + rel
        gone = deleted(path, rel, st)
        if gone is not None:
            kind, crel = DELETE, gone
        else:
            kind, crel = ADD, rel
            for layer in layers_b:
                try:
                    lst = os.stat(layer + rel)      # Docker follows symlinks here
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if stat.S_ISDIR(lst.st_mode) and stat.S_ISDIR(st.st_mode):
                    if (st.st_size == lst.st_size and st.st_mode == lst.st_mode
                            and _same_fs_time(st.st_mtime_ns, lst.st_mtime_ns)):
                        return      # the directory is only there as a parent
                kind = CHANGE
                break
        if stat.S_ISDIR(st.st_mode):
            changed_dirs.add(rel)
        if kind in (ADD, DELETE):
            parent = rel.rpartition(b"/")[0]
            if parent and parent not in changed_dirs:
                out.append((parent, CHANGE))
                changed_dirs.add(parent)
        out.append((crel, kind))

    def walk(rel):
        with os.scandir(rw_b + rel) as it:
            names = sorted((e.name for e in it))
        for name in names:
            crel = rel + b"/" + name
            try:
                st = os.lstat(rw_b + crel)
            except FileNotFoundError:
                continue
            visit(crel, st)
            if stat.S_ISDIR(st.st_mode):
                walk(crel)

    try:
        walk(b"")
    except RecursionError:
        raise GraphDriverError("changes of %s: tree too deep" % rw)
    except OSError as e:
        raise GraphDriverError("changes of %s: %s: %s" % (rw, e.filename, e.strerror))
    return _sorted_changes(out)


def _overlay_deleted(path, rel, st):
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return rel
    if stat.S_ISDIR(st.st_mode):
        try:
            if os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                # Docker reports an opaque directory as deleted (its new
                # content follows as additions).
                return rel
        except OSError:
            pass
    return None


def overlay_changes(lower_dirs, upper_dir):
    """Docker's OverlayChanges(layers, rw): changes of an overlay upper dir."""
    return _layer_changes(lower_dirs, upper_dir, _overlay_deleted, None)


def _aufs_deleted(path, rel, st):
    parent, sep, base = rel.rpartition(b"/")
    if base.startswith(b".wh."):
        return parent + b"/" + base[4:]
    return None


def _aufs_skip(rel):
    # filepath.Match("/.wh..wh.*", path): top level only, '*' stays in a name.
    return rel.startswith(b"/.wh..wh.") and b"/" not in rel[1:]


def aufs_changes(lower_dirs, rw_dir):
    """Docker's AUFSChanges(layers, rw): changes of an aufs rw branch."""
    return _layer_changes(lower_dirs, rw_dir, _aufs_deleted, _aufs_skip)


def changes_size(root, changes):
    """Docker's ChangesSize: lstat sizes of non-directory A/C entries,
    each hard-linked inode counted once."""
    root_b = os.fsencode(os.path.abspath(root))
    size = 0
    seen = set()
    for c in changes:
        if c.kind not in (ADD, CHANGE):
            continue
        try:
            st = os.lstat(root_b + os.fsencode(c.path))
        except OSError:
            continue        # Docker logs and goes on
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
        size += st.st_size
    return size
