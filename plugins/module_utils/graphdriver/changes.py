"""What changed between two trees, as Docker computes it (pkg/archive/changes*.go).

* :func:`changes_dirs` — ``ChangesDirs``: walk both trees together; a pair
  with the same name, inode and (parent) device is pruned unseen (Docker
  reads the inode from getdents, so copied-up or snapshotted trees skip
  whole subtrees without an lstat); otherwise lstat both sides and compare
  mode, owner, rdev and, for non-directories, size and mtime (equal in the
  same second when either side has no nanoseconds: layers come from tars
  with whole seconds), and ``security.capability``. A directory holding a
  change is itself reported changed (the root never is).
* :func:`aufs_changes` — ``AUFSChanges``: walk only the rw branch,
  whiteouts are deletions. (Docker's ``OverlayChanges`` is not here: it
  reports an opaque directory as deleted, which is why overlay2 stopped
  using it; :func:`upper_changes` gives the naive walk's answer instead.)
* :class:`Union` and :func:`union_changes` — ``ChangesDirs`` of two overlay
  mounts without mounting them: each tree is read from its layer
  directories as the kernel would show it (legacy overlay's container
  layers, which Docker only ever diffed mounted).
* :func:`upper_changes` — what ``ChangesDirs`` of an overlay mount and
  its parent's mount reports, read from the layer's upper directory alone
  (in O(changed), as containers/storage reads it), for overlay2 when the
  native diff is safe.
* :func:`changes_size` — ``ChangesSize``.

Results are sorted by path (Docker sorts them before exporting).
"""

import os
import stat

from .driver import Change, ADD, CHANGE, DELETE
from .errors import GraphDriverError

CAPABILITY_XATTR = "security.capability"
OPAQUE_XATTR = "trusted.overlay.opaque"
# Set by kernels with redirect_dir or metacopy on: the real data is then
# elsewhere in a lower layer, which only the kernel resolves.
REDIRECT_XATTR = "trusted.overlay.redirect"
METACOPY_XATTR = "trusted.overlay.metacopy"
_S_IFDIR = stat.S_IFDIR


class NeedsMount(GraphDriverError):
    """Only a mount shows what a layer holds: a redirect or metacopy xattr
    (the kernel follows it), or a copied-up hard link under fuse-overlayfs
    (see OverlayRules). The naive walk of the mounts is the answer."""


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


def _exists(path):
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
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
                if not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False)
                        or e.is_symlink()) and not _exists(e.path):
                    # Docker lstats every name: overlay lists the whiteouts
                    # of a directory that is only in the upper layer, but
                    # does not find them
                    continue
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
    each hard-linked inode counted once. ``root`` may be a function of a
    change's path giving the file to measure (see Union.path)."""
    if callable(root):
        where = root
    else:
        root_b = os.fsencode(os.path.abspath(root))

        def where(path):
            return root_b + os.fsencode(path)
    size = 0
    seen = set()
    for c in changes:
        if c.kind not in (ADD, CHANGE):
            continue
        path = where(c.path)
        if path is None:
            continue
        try:
            st = os.lstat(path)
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


def _is_whiteout(st):
    """A 0/0 character device, or None: a whiteout named by a file."""
    return st is None or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)


class OverlayRules(object):
    """How an overlay implementation marks, in its layer directories, a
    deleted name and an opaque directory.

    The kernel's overlay (KERNEL): a 0/0 character device hides its name;
    ``trusted.overlay.opaque=y`` makes a directory opaque. fuse-overlayfs
    (FUSE_OVERLAYFS, main.c) also reads the aufs-style names that it writes
    where it cannot mknod, and that the fuse driver's native apply writes:
    ``.wh.<name>`` hides <name>, ``.wh..wh..opq`` makes its directory
    opaque, as do its ``user.`` opaque xattrs; and it shows no ``.wh.``
    name. A redirect or metacopy xattr is refused by both: only the kernel
    can follow those.
    """

    def __init__(self, opaque_xattrs, literal, links_shared):
        self.opaque_xattrs = opaque_xattrs
        self.literal = literal
        # fuse-overlayfs shows the names of a lower hard link as one inode
        # (by lower inode number), so after one name is copied up the other
        # shows the copy or the original, by the order of their lookups.
        self.links_shared = links_shared

    def entries(self, directory):
        """(name, path, lstat) of a layer directory as the union reads it:
        a whiteout file ``.wh.<name>`` is (<name>, path, None)."""
        with os.scandir(directory) as it:
            for e in it:
                if self.literal and e.name.startswith(".wh."):
                    name = e.name[4:]
                    if name and not name.startswith(".wh."):
                        yield name, os.path.join(directory, name), None
                    continue
                yield e.name, e.path, e.stat(follow_symlinks=False)

    def lookup(self, directory, name):
        """(path, lstat or None for a whiteout) of ``name`` in a layer
        directory; FileNotFoundError when the layer has nothing of it."""
        path = directory + "/" + name
        if self.literal:
            if name.startswith(".wh."):
                raise FileNotFoundError(path)
            if os.path.lexists(directory + "/.wh." + name):
                return path, None
        return path, os.lstat(path)

    @staticmethod
    def refuse_redirects(path, xattr_names):
        """NeedsMount when ``xattr_names`` (path's listxattr) has a
        redirect or metacopy xattr."""
        for name in (REDIRECT_XATTR, METACOPY_XATTR):
            if name in xattr_names:
                raise NeedsMount(
                    "%s has %s: written by an overlay mount with redirect_dir or metacopy on, "
                    "which only the kernel can read back" % (path, name))

    def opaque(self, path, xattr_names):
        """Whether the layer directory ``path`` is opaque (``xattr_names``:
        its listxattr)."""
        for name in self.opaque_xattrs:
            if name in xattr_names and os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        return self.literal and os.path.lexists(path + "/.wh..wh..opq")


KERNEL = OverlayRules((OPAQUE_XATTR,), False, False)
FUSE_OVERLAYFS = OverlayRules((OPAQUE_XATTR, "user.overlay.opaque", "user.fuseoverlayfs.opaque"),
                              True, True)


class Union(object):
    """The tree an overlay mount of ``layers`` (directories, top first, the
    last one the lowest) would show, read from the directories.

    The kernel's rules (fs/overlayfs namei.c, readdir.c), whiteouts and
    opaque directories as ``rules`` mark them: the topmost entry of a name
    is shown; a whiteout hides the name below it; a directory merges the
    same-named directories below it until one is a non-directory or it is
    opaque. A single layer is a plain tree (no whiteouts): Docker reads a
    base layer without mounting it.
    """

    def __init__(self, layers, rules=KERNEL):
        self.layers = [os.path.abspath(os.fsdecode(p)) for p in layers]
        self.bottom = len(self.layers) - 1
        self.rules = rules if self.bottom else KERNEL
        self.root = self._merge([(i, p, os.lstat(p)) for i, p in enumerate(self.layers)])

    def _opaque(self, path, st):
        """Whether an upper entry is an opaque directory; refuses redirects."""
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return False
        self.rules.refuse_redirects(path, names)
        return stat.S_ISDIR(st.st_mode) and self.rules.opaque(path, names)

    def _merge(self, found):
        """What the union shows of one name, from its entries in each layer
        [(layer index, path, lstat)], top first: the shown entry first, then
        the directories merged into it; empty when the name is hidden."""
        shown = []
        for i, path, st in found:
            if self.bottom and _is_whiteout(st):
                break
            isdir = stat.S_ISDIR(st.st_mode)
            if shown and not isdir:
                break
            opaque = i < self.bottom and self._opaque(path, st)
            shown.append((i, path, st))
            if not isdir or opaque:
                break
        return shown

    def entries(self, shown):
        """name -> shown entries, of the directory ``shown`` (a _merge result)."""
        found = {}
        for i, path, dummy in shown:
            for name, child, st in self.rules.entries(path):
                found.setdefault(name, []).append((i, child, st))
        out = {}
        for name, entries in found.items():
            got = self._merge(entries)     # found top layer first, as shown is ordered
            if got:
                out[name] = got
        return out

    def child(self, shown, name):
        """The shown entries of ``name`` in the directory ``shown``."""
        if not shown or not stat.S_ISDIR(shown[0][2].st_mode):
            return []
        found = []
        for i, path, dummy in shown:
            try:
                child, st = self.rules.lookup(path, name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            found.append((i, child, st))
        return self._merge(found)

    def path(self, rel):
        """The file shown at ``rel`` ('/etc/hosts'; str or bytes), or None."""
        shown = self.root
        for part in os.fsdecode(rel).split("/"):
            if part:
                shown = self.child(shown, part)
                if not shown:
                    return None
        return shown[0][1]


def _identity(shown):
    return [(st.st_dev, st.st_ino) for dummy_i, dummy_path, st in shown]


def union_changes(new, old=None):
    """ChangesDirs of the mounts of Union ``new`` and Union ``old`` (None:
    an empty tree), compared as :func:`changes_dirs` compares two trees.
    Entries that are the same files in both (the shared lower layer) are
    pruned unseen, as changes_dirs prunes equal inodes."""
    out = []

    def added(rel, union, shown):
        for name, got in union.entries(shown).items():
            crel = rel + "/" + name
            out.append((crel, ADD))
            if stat.S_ISDIR(got[0][2].st_mode):
                added(crel, union, got)

    def walk(rel, nshown, oshown):
        old_entries = old.entries(oshown)
        for name, n in new.entries(nshown).items():
            crel = rel + "/" + name
            o = old_entries.pop(name, None)
            nst = n[0][2]
            if o is None:
                out.append((crel, ADD))
                if stat.S_ISDIR(nst.st_mode):
                    added(crel, new, n)
                continue
            if _identity(n) == _identity(o):
                continue
            ost = o[0][2]
            changed = _stat_different(ost, nst) or _cap(n[0][1]) != _cap(o[0][1])
            at = len(out)
            if changed:
                out.append((crel, CHANGE))
            if stat.S_ISDIR(nst.st_mode):
                before = len(out)
                if stat.S_ISDIR(ost.st_mode):
                    walk(crel, n, o)
                else:
                    added(crel, new, n)
                if len(out) > before and not changed:
                    out.insert(at, (crel, CHANGE))
        for name in old_entries:
            out.append((rel + "/" + name, DELETE))

    try:
        if old is None:
            added("", new, new.root)
        else:
            walk("", new.root, old.root)
    except RecursionError:
        raise GraphDriverError("changes of %s: tree too deep" % ":".join(new.layers))
    except OSError as e:
        raise GraphDriverError("changes of %s against %s: %s: %s"
                               % (":".join(new.layers), ":".join(old.layers) if old else "nothing",
                                  e.filename, e.strerror))
    return _sorted_changes(out)


def _xattr_names(path):
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()


class _UpperWalker(object):
    """changes_dirs(mount of upper over lowers, mount of lowers), from the
    upper directory: what it does not hold is the same file in both mounts,
    so only its entries (and, below an opaque or replaced directory, the
    lower tree they hide) are compared, by the same rules as changes_dirs.
    """

    def __init__(self, upper, lowers, rules):
        self.upper = os.path.abspath(os.fsdecode(upper))
        self.old = Union(lowers, rules)
        self.rules = rules
        self.out = []

    def _upper_entries(self, path):
        """(name, path, lstat or None, xattr names) of an upper directory,
        the whiteouts too (a mount hides them: callers decide)."""
        for name, cpath, st in self.rules.entries(path):
            names = () if st is None else _xattr_names(cpath)
            self.rules.refuse_redirects(cpath, names)
            yield name, cpath, st, names

    def _added(self, rel, path):
        """Everything below the upper directory ``path`` is an Add."""
        for name, cpath, st, dummy in self._upper_entries(path):
            if _is_whiteout(st):
                continue
            crel = rel + "/" + name
            self.out.append((crel, ADD))
            if stat.S_ISDIR(st.st_mode):
                self._added(crel, cpath)

    def _compare(self, crel, cpath, st, xnames, o, opaque=False):
        """Compare the new entry with the old one ``o`` (a _merge result),
        then what is below them. ``opaque``: below an opaque directory,
        where nothing merges with the old tree."""
        out = self.out
        ost = o[0][2]
        if self.rules.links_shared and ost.st_nlink > 1 and not stat.S_ISDIR(ost.st_mode):
            raise NeedsMount("%s: a copied-up hard link of %s, which fuse-overlayfs shows by "
                             "the order of lookups" % (cpath, o[0][1]))
        ncap = (os.getxattr(cpath, CAPABILITY_XATTR, follow_symlinks=False)
                if CAPABILITY_XATTR in xnames else None)
        changed = _stat_different(ost, st) or ncap != _cap(o[0][1])
        at = len(out)
        if changed:
            out.append((crel, CHANGE))
        if not stat.S_ISDIR(st.st_mode):
            return
        before = len(out)
        if not stat.S_ISDIR(ost.st_mode):
            self._added(crel, cpath)
        elif opaque or self.rules.opaque(cpath, xnames):
            self._replaced(crel, cpath, o)
        else:
            self._merged(crel, cpath, o)
        if len(out) > before and not changed:
            out.insert(at, (crel, CHANGE))

    def _merged(self, rel, path, oshown):
        """The upper directory ``path`` shown merged over ``oshown``."""
        for name, cpath, st, xnames in self._upper_entries(path):
            crel = rel + "/" + name
            o = self.old.child(oshown, name)
            if _is_whiteout(st):
                if o:
                    self.out.append((crel, DELETE))
            elif o:
                self._compare(crel, cpath, st, xnames, o)
            else:
                self.out.append((crel, ADD))
                if stat.S_ISDIR(st.st_mode):
                    self._added(crel, cpath)

    def _replaced(self, rel, path, oshown):
        """The upper directory ``path`` alone (opaque, or below one) against
        the old directory ``oshown``: the whole old directory is compared."""
        old_entries = self.old.entries(oshown)
        for name, cpath, st, xnames in self._upper_entries(path):
            if _is_whiteout(st):
                continue
            crel = rel + "/" + name
            o = old_entries.pop(name, None)
            if o:
                self._compare(crel, cpath, st, xnames, o, opaque=True)
            else:
                self.out.append((crel, ADD))
                if stat.S_ISDIR(st.st_mode):
                    self._added(crel, cpath)
        for name in old_entries:
            self.out.append((rel + "/" + name, DELETE))


def upper_changes(upper, lowers, rules=KERNEL):
    """changes_dirs(mount of ``upper`` over ``lowers``, mount of ``lowers``)
    without mounting, reading the upper directory (whiteouts and opaque
    directories as ``rules`` mark them) and only the lower entries it names.

    ``lowers`` are the parent's layer directories, nearest first. Raises
    NeedsMount where the directories are not enough (then the naive walk
    of the mounts is the answer).
    """
    if not lowers:
        return changes_dirs(upper, None)
    try:
        w = _UpperWalker(upper, lowers, rules)
        w._merged("", w.upper, w.old.root)
    except RecursionError:
        raise GraphDriverError("changes of %s: tree too deep" % upper)
    except OSError as e:
        raise GraphDriverError("changes of %s over %s: %s: %s"
                               % (upper, ":".join(lowers), e.filename, e.strerror))
    return _sorted_changes(w.out)
