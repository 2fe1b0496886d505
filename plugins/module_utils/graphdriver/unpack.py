"""Applying a layer tar (moby pkg/archive diff.go's UnpackLayer, and Unpack
with the overlay whiteout converter), all or nothing.

* :func:`apply_layer` — the entry point: runs an :class:`_Applier`, then
  commits its journal (apply_journal.py) or rolls it back, and words the
  error;
* ``_Applier.run`` — the loop: new regular files, directories and
  symlinks in a directory already resolved take
  :meth:`_Applier._new_members` (the bulk of a layer), fed straight from
  the reader's buffer (``TarReader.plain_members``) or from an entry;
  everything else takes :meth:`_Applier._apply`, which resolves the entry's
  parent and dispatches on its type (whiteouts, opaque markers, files,
  directories, links, devices);
* resolution: ``_resolve`` (an entry name or a hard link target, through
  ``_resolve_parent``) and ``_dir_fd``.

Containment. Docker relies on a chroot to contain a hostile tar; here every
path is resolved from an open descriptor of the layer root, one component
at a time with ``O_NOFOLLOW``, so the kernel never follows a symlink for
us. Docker's chroot does follow one in an entry's parent path (a usrmerge
base has ``bin -> usr/bin``, and a layer may then carry ``bin/foo``); so do
we, by reading the link ourselves, when it is relative and stays inside the
root. An absolute or escaping one there is refused with BreakoutError.

Speed. Resolution happens once per directory, not per entry: a directory
this apply opened component by component (or created) is remembered with
its descriptor, and an entry below it is created with ``dir_fd`` and no
lookup at all. Whatever replaces or removes a path (all of it goes through
``_move_aside``) forgets the directories at and below it first, so a
symlink swapped in for a remembered directory is resolved afresh. A new
regular file then costs open, write, futimens and close, a symlink
symlinkat and utimensat, the owner and mode calls left out where the
creating call already gave what the entry asks for.

Whiteouts: ``whiteout_format`` (whiteouts.py) is AUFS for UnpackLayer,
OVERLAY for Unpack with the overlay converter, LITERAL for Unpack with no
converter.
"""

import errno
import fcntl
import os
import posixpath
import stat

from .apply_journal import O_DIR, Journal
from .archive import legacy_rules
from .errors import ArchiveError, BreakoutError, GraphDriverError
from . import tarstream
from .tarstream import BLOCKDEV, CHAR, CONT, DIR, FIFO, LINK, REG, REGA, SYMLINK, XGLOBAL
from .whiteouts import (AUFS, FORMATS, LITERAL, OVERLAY, OPAQUE_XATTR, WHITEOUT_LINK_DIR_B,
                        WHITEOUT_META_PREFIX_B, WHITEOUT_OPAQUE_B, WHITEOUT_PREFIX_B)

# Symlinks followed in one entry's parent path, as the kernel's MAXSYMLINKS:
# a loop ends in BreakoutError instead of a hang.
MAX_SYMLINK_HOPS = 40

_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FICLONE = 0x40049409           # linux/fs.h: _IOW(0x94, 9, int)
_CLONE_MIN = 64 * 1024          # below this a write costs less than open + ioctl
# Not between these two files (other filesystems, no reflinks): stop trying.
_NO_CLONE = (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.ENOSYS, errno.EPERM)
_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EPERM)
# Open directory descriptors kept at most (what was dropped is reopened
# when an entry needs it).
_MAX_CACHED_DIRS = 2048
_CHUNK = 1 << 20
_ACL_DEFAULT = "system.posix_acl_default"
# Docker's Chtimes clamps times outside [epoch, maxTime] to the epoch.
_MAX_NS = (1 << 63) - 1
_NS = 1000000000
_MAX_S = _MAX_NS // _NS
_open, _write, _utime, _close = os.open, os.write, os.utime, os.close


def _current_umask():
    """The process umask without changing it (other threads may create files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777    # unknown: the fast path then always calls fchmod


def _clamp(ns):
    return 0 if ns < 0 or ns > _MAX_NS else ns


def _escapes(parent_rel, target):
    """Would ``target`` (Go's filepath.Join semantics) climb above the root?"""
    depth = parent_rel.count(b"/") + 1 if parent_rel else 0
    for c in target.split(b"/"):
        if c == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif c and c != b".":
            depth += 1
    return False


def _plain_name(name, tf):
    """For _new_members: a member name that failed its quick check, as the
    fast path can take it (GNU tar's "./" prefix, a directory's trailing
    slash removed), or None: the general path takes it."""
    if name[:2] == b"./":
        name = name[2:]
    if tf == 53 and name[-1:] == b"/":    # a directory
        name = name[:-1]
    # Dot components (also .wh. and the stash) and odd slashes stay out.
    # (find, not ``in``: bytes in bytes raises and clears a TypeError first)
    if not name or name[0] in b"./" or name.find(b"/.") >= 0 or name.find(b"//") >= 0 or name[-1] == 47:
        return None
    return name


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_fd(src, dst):
    while True:
        data = os.read(src, _CHUNK)
        if not data:
            return
        _write_all(dst, data)


class _Applier(object):

    def __init__(self, root, whiteout_format, layer_id, chown, engine_version=None):
        self.root = os.fsencode(os.path.abspath(root))
        if whiteout_format not in FORMATS:
            raise GraphDriverError("unknown whiteout format %r" % (whiteout_format,))
        self.overlay = whiteout_format == OVERLAY
        self.literal = whiteout_format == LITERAL
        # overlay and literal are Docker's Unpack; aufs is UnpackLayer
        self.unpack = self.overlay or self.literal
        self.layer = layer_id
        self.chown = os.geteuid() == 0 if chown is None else chown
        # Docker 20.10's UnpackLayer makes missing parents 0600 (umask 0 in
        # its chroot); Unpack (the overlay path), and from 23.0 UnpackLayer
        # too (createImpliedDirectories), make them 0755.
        legacy = legacy_rules(engine_version)
        self.parent_mode = 0o600 if legacy and not self.unpack else 0o755
        if os.geteuid() != 0:
            # Without CAP_DAC_OVERRIDE a 0600 directory cannot be entered,
            # not even to finish this apply.
            self.parent_mode |= 0o700
        try:
            self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise GraphDriverError("%s: cannot open layer root %s: %s"
                                   % (self._who(), os.fsdecode(self.root), e.strerror))
        self.journal = Journal(self.root, self.root_fd)
        self.new = self.journal.new         # rel paths this apply created
        self.stash_name = self.journal.stash_name
        # Directories resolved by this apply (opened component by component
        # with O_NOFOLLOW, or created): rel -> open descriptor.
        self.dirs = {b"": self.root_fd}
        # Directories the descriptor of which was dropped (too many open)
        # but that are still what was resolved: no symlink on the way.
        self.resolved = set()
        # Of those in ``dirs``, the ones a new file can be created in right
        # away, the directory journaled already (created by this apply or
        # its times saved): rel -> (descriptor, strict; see _update_ready).
        # Plain: a file root creates there is already what a plain tar
        # entry asks for, owner 0:0 (no setgid to another group) and the
        # open(2) mode as given (no default ACL), so fchown and fchmod can
        # be left out; GNU tar makes both calls every time.
        self.ready = {}
        self.plain_dirs = set()
        # mode bits open(2) does not give as asked: the fast path fchmods
        self.mode_mask = 0o7000 | _current_umask()
        self.root_ids = os.geteuid() == 0 and os.getegid() == 0
        self._check_plain(b"", self.root_fd)
        self.unpacked = set()               # Docker's unpackedPaths
        self.dir_times = []                 # (rel, atime_ns, mtime_ns): set at the end
        self.plnk = {}                      # aufs hard link dir: base -> (entry, stash slot)
        self.current = None                 # the entry being applied, for errors
        self.reader = None
        self.clone_root = None              # see ChunkStream.files_root

    def _who(self):
        return "layer %s" % self.layer if self.layer else "apply"

    def entry_name(self):
        cur = self.current
        if cur is None:
            return None
        return os.fsdecode(cur if isinstance(cur, bytes) else cur.name)

    # -- resolution -----------------------------------------------------
    def _dir_fd(self, rel, create=False):
        """Open descriptor of directory ``rel``; never follows a symlink."""
        fd = self.dirs.get(rel)
        if fd is not None:
            return fd
        parent, sep, base = rel.rpartition(b"/")
        pfd = self._dir_fd(parent, create)
        try:
            fd = os.open(base, O_DIR, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise
            # Docker: MkdirAll(parent) for an entry whose parent is missing.
            self._note_change(parent)
            os.mkdir(base, self.parent_mode, dir_fd=pfd)
            self.journal.created(rel)
            os.chmod(base, self.parent_mode, dir_fd=pfd)
            fd = os.open(base, O_DIR, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise BreakoutError(
                        "%s: %r is a symlink: refusing to write through it"
                        % (self._who(), os.fsdecode(rel)), self.entry_name())
                raise ArchiveError("%s: %r is not a directory"
                                   % (self._who(), os.fsdecode(rel)), self.entry_name())
            raise
        self.dirs[rel] = fd
        self._check_plain(rel, fd)
        return fd

    def _check_plain(self, rel, fd):
        plain = False
        st = os.fstat(fd)
        if not (st.st_mode & stat.S_ISGID and st.st_gid != 0):
            try:
                plain = _ACL_DEFAULT not in os.listxattr(fd)
            except OSError:
                pass
        self._set_plain(rel, plain)

    def _set_plain(self, rel, plain):
        if plain:
            self.plain_dirs.add(rel)
        else:
            self.plain_dirs.discard(rel)
        self._update_ready(rel)

    def _update_ready(self, rel):
        fd = self.dirs.get(rel)
        if fd is not None and (rel in self.new or rel in self.journal.saved_times):
            # strict: a new file there always gets fchown (if chown) and fchmod
            strict = rel not in self.plain_dirs or (self.chown and not self.root_ids)
            self.ready[rel] = (fd, strict)
        else:
            self.ready.pop(rel, None)

    def _drop_dirs(self, under=None):
        """Close cached directory descriptors: all of them (too many open,
        or the end), or those of ``under`` and below, which are no longer
        what they were resolved as (``under`` is being moved aside)."""
        if under is None:
            keys = [k for k in self.dirs if k]
            self.resolved.update(keys)
        else:
            pre = under + b"/"
            keys = [k for k in self.dirs if k == under or k.startswith(pre)]
            self.resolved = {k for k in self.resolved if k != under and not k.startswith(pre)}
        for k in keys:
            os.close(self.dirs.pop(k))
            self.plain_dirs.discard(k)
            self.ready.pop(k, None)

    def _resolve_parent(self, rel, entry_name):
        """``rel`` with its symlinks resolved inside the root, as Docker's
        chroot would; refuses absolute and escaping ones (see module doc).

        Every component is lstat'ed below a prefix already known to hold
        no symlink, so no path handed to the kernel contains one; a prefix
        this apply resolved before is not looked at again.
        """
        if rel in self.dirs or rel in self.resolved:
            return rel
        out, parts, hops = [], rel.split(b"/"), 0
        while parts:
            part = parts.pop(0)
            if part in (b"", b"."):
                continue
            if part == b"..":
                if not out:
                    raise BreakoutError("%s: %r resolves outside the layer root"
                                        % (self._who(), os.fsdecode(entry_name)),
                                        os.fsdecode(entry_name))
                out.pop()
                continue
            out.append(part)
            prefix = b"/".join(out)
            if prefix in self.dirs or prefix in self.resolved:
                continue
            try:
                st = os.lstat(self.root + b"/" + prefix)
            except (FileNotFoundError, NotADirectoryError):
                continue    # created (or refused) by the entry's own apply
            if not stat.S_ISLNK(st.st_mode):
                continue
            target = os.readlink(self.root + b"/" + prefix)
            hops += 1
            if target.startswith(b"/") or hops > MAX_SYMLINK_HOPS:
                raise BreakoutError(
                    "%s: %r is a symlink to %r: refusing to write through it"
                    % (self._who(), os.fsdecode(prefix), os.fsdecode(target)),
                    os.fsdecode(entry_name))
            out.pop()
            parts = target.split(b"/") + parts
        return b"/".join(out)

    def _resolve(self, rel, entry_name):
        """``rel`` (clean, relative) with the symlinks in its parent resolved
        (_resolve_parent): (rel, parent, base)."""
        parent, sep, base = rel.rpartition(b"/")
        if parent:
            parent = self._resolve_parent(parent, entry_name)
            rel = parent + b"/" + base if parent else base
        return rel, parent, base

    def _normalize(self, entry):
        # filepath.Clean, and absolute names are relative to the root.
        name = posixpath.normpath(entry.name).lstrip(b"/")
        if name == b".." or name.startswith(b"../"):
            raise BreakoutError("%s: %r is outside the layer root"
                                % (self._who(), os.fsdecode(entry.name)), os.fsdecode(entry.name))
        if name == b".":
            return b""
        name = self._resolve(name, entry.name)[0]
        if name.startswith(self.stash_name):
            raise BreakoutError("%s: %r names the apply journal"
                                % (self._who(), os.fsdecode(entry.name)), os.fsdecode(entry.name))
        return name

    @staticmethod
    def _proc(pfd, base):
        return b"/proc/self/fd/%d/%s" % (pfd, base)

    # -- journal ----------------------------------------------------------
    def _create(self, rel, pfd, base, make):
        """Run ``make()``, which creates ``base``; whatever is already there
        is moved aside (journaled) first. Returns what ``make`` returns."""
        try:
            made = make()
        except FileExistsError:
            self._remove_existing(rel, pfd, base)
            made = make()
        self.journal.created(rel)
        return made

    def _note_change(self, dir_rel):
        """Entries of ``dir_rel`` are about to change: journal its times."""
        journal = self.journal
        if dir_rel in self.new or dir_rel in journal.saved_times:
            return
        st = None
        if dir_rel:
            parent, sep, base = dir_rel.rpartition(b"/")
            st = os.stat(base, dir_fd=self._dir_fd(parent), follow_symlinks=False)
        journal.save_times(dir_rel, st)
        self._update_ready(dir_rel)

    def _note_meta(self, rel, pfd, base):
        """``rel`` (existing, not ours) is about to get new metadata."""
        self.journal.save_metadata(rel, self._proc(pfd, base))

    def _move_aside(self, rel, pfd, base, isdir):
        """Docker's RemoveAll(rel), undoable: rename it into the stash."""
        self._note_change(rel.rpartition(b"/")[0])
        if isdir:
            self._drop_dirs(rel)
        self.journal.move_aside(rel, pfd, base, isdir)

    def _remove_existing(self, rel, pfd, base):
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        self._move_aside(rel, pfd, base, stat.S_ISDIR(st.st_mode))
        return st

    # -- the apply loop -----------------------------------------------------
    def run(self, stream):
        size = 0
        root = getattr(stream, "files_root", None)
        if root is not None:
            self.clone_root = os.fsencode(root).rstrip(b"/")
        reader = self.reader = tarstream.TarReader(stream)
        entries = iter(reader)
        plain_members = reader.plain_members
        new_members = self._new_members
        apply = self._apply
        try:
            while True:
                size += new_members(plain_members())[0]
                entry = next(entries, None)
                if entry is None:
                    break
                self.current = entry
                if entry.typeflag == XGLOBAL:
                    continue    # Go hands it over with Size 0; no effect
                if (entry.typeflag != REG or entry.xattrs or entry.atime_ns is not None
                        or entry.mtime_ns % _NS
                        or not new_members(((48, entry.name, entry.mode, entry.uid, entry.gid,
                                             entry.mtime_ns // _NS, entry.size, None),), entry)[1]):
                    apply(entry)
                size += entry.size
            self.current = None
            self._finish()
        finally:
            reader.close()
        return size

    def _new_members(self, members, entry=None):
        """The bulk of a layer: new regular files, directories and symlinks,
        no xattrs, each in a directory in ``self.ready``, made in one loop
        with as few Python operations and syscalls as possible.
        ``members``: TarReader.plain_members (file payloads from the
        reader's buffer), or one regular file ``entry``'s fields (data None:
        the payload is read from ``entry``). Stops at the first member that
        needs more (a name to clean, whiteouts, an existing path...), which
        the general path then takes. Returns (sum of sizes, members made)."""
        total = made = 0
        ready = self.ready
        new = self.new
        created = self.journal.created
        unpacked_add = self.unpacked.add
        chown = self.chown
        mode_mask = self.mode_mask
        name = None
        try:
            for tf, name, mode, uid, gid, mtime, size, data in members:
                # The keys of ``ready`` are clean relative paths (no empty,
                # "." or ".." component, no leading or trailing slash): a
                # name whose parent is one, and whose base is neither empty
                # nor a dot name (.wh. files, the stash), needs no cleaning.
                parent, sep, base = name.rpartition(b"/")
                slot = ready.get(parent)
                if slot is None or not base or base[0] == 46:   # '.'
                    name = _plain_name(name, tf)
                    if name is None:
                        break
                    parent, sep, base = name.rpartition(b"/")
                    slot = ready.get(parent)
                    if slot is None:
                        break
                if not 0 <= mtime <= _MAX_S:
                    break
                mode &= 0o7777
                # What root creates in a plain directory (see _update_ready)
                # is owned by 0:0 with the mode asked & ~umask: when that is
                # what the entry wants, fchown and fchmod are not needed.
                pfd, strict = slot
                if tf == 48:
                    try:
                        fd = _open(base, _O_NEWFILE, mode & 0o777, dir_fd=pfd)
                    except FileExistsError:
                        break
                    # Only a path whose parent is not new needs an entry of its
                    # own (and one that is, is not added to ``new``: nothing is
                    # created below a file).
                    if parent not in new:
                        created(name)
                    try:
                        if data is None:
                            self._payload(entry, name, fd)
                        elif size:
                            if not (size >= _CLONE_MIN and self.clone_root is not None
                                    and self._clone(name, fd, size)):
                                n = _write(fd, data)
                                if n != size:
                                    _write_all(fd, data[n:])
                        if chown and (strict or uid or gid):
                            os.fchown(fd, uid, gid)
                            os.fchmod(fd, mode)
                        elif strict or mode & mode_mask:
                            os.fchmod(fd, mode)
                        _utime(fd, (mtime, mtime))
                    finally:
                        _close(fd)
                elif tf == 53:
                    if not self._new_dir(name, parent, pfd, base, mode, uid, gid, mtime, strict):
                        break
                elif not self._new_symlink(name, parent, pfd, base, uid, gid, mtime, strict, data):
                    break
                unpacked_add(name)
                total += size
                made += 1
            name = None
        finally:
            if name is not None:
                self.current = name     # for the error, if this is one
        return total, made

    def _new_dir(self, rel, parent, pfd, base, mode, uid, gid, mtime, strict):
        """_directory for a new directory, for _new_members. False: nothing
        was done."""
        if len(self.dirs) > _MAX_CACHED_DIRS:
            return False    # _apply drops them first
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            return False    # a merge
        self.journal.created(rel)
        fd = self.dirs[rel] = os.open(base, O_DIR, dir_fd=pfd)
        if self.chown and (strict or uid or gid):
            os.fchown(fd, uid, gid)
        # Always: a directory made in a setgid one is setgid too.
        os.fchmod(fd, mode)
        if self.chown and parent in self.plain_dirs:
            self._set_plain(rel, not (mode & stat.S_ISGID and gid != 0))
        else:
            self._check_plain(rel, fd)
        self.dir_times.append((rel, None, mtime * _NS))
        return True

    def _new_symlink(self, rel, parent, pfd, base, uid, gid, mtime, strict, target):
        """_symlink for a new symlink, for _new_members. False: nothing was
        done (an escaping target is refused by _symlink)."""
        if target.find(b"..") >= 0 and _escapes(parent, target):
            return False
        try:
            os.symlink(target, base, dir_fd=pfd)
        except FileExistsError:
            return False
        self.journal.created(rel)
        if self.chown and (strict or uid or gid):
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, (mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        return True

    def _payload(self, e, name, fd):
        """The entry's data into ``fd``: cloned from the file it was read
        from when the stream says where that is, else written."""
        if not e.data_size:
            return
        if e.data_size >= _CLONE_MIN and self.clone_root is not None and self._clone(name, fd, e.data_size):
            e.skip()    # still read: the stream is hashed
        else:
            e.copy_to_fd(fd)

    def _clone(self, name, fd, size):
        """Share the extents of the source file ``name`` (under clone_root)
        with the new file ``fd``. False: write the payload instead."""
        try:
            src = os.open(self.clone_root + b"/" + name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False    # the stream reader reports what is wrong with it
        try:
            if os.fstat(src).st_size != size:
                return False
            fcntl.ioctl(fd, _FICLONE, src)
        except OSError as err:
            if err.errno in _NO_CLONE:
                self.clone_root = None
                return False
            raise
        finally:
            os.close(src)
        return True

    def _apply(self, e):
        tf = e.typeflag
        if len(self.dirs) > _MAX_CACHED_DIRS:
            # Only between entries: callers hold descriptors within one.
            self._drop_dirs()
        rel = self._normalize(e)
        parent, sep, base = rel.rpartition(b"/")

        if rel.startswith(WHITEOUT_META_PREFIX_B) and not self.literal:
            # aufs metadata (.wh..wh.plnk, .wh..wh.aufs) is skipped; files in
            # the hard link directory are kept aside for links to them.
            # .wh..wh..opq at the root is the root's opaque marker.
            if rel.startswith(WHITEOUT_LINK_DIR_B + b"/") and tf in (REG, REGA, CONT):
                self._keep_plnk(e, base)
            if rel != WHITEOUT_OPAQUE_B:
                return

        if not rel:
            self._apply_root(e)
            return

        pfd = self._dir_fd(parent, create=True)
        # Before anything changes in it: its times, for a rollback.
        self._note_change(parent)

        if base.startswith(WHITEOUT_PREFIX_B) and not self.literal:
            if base == WHITEOUT_OPAQUE_B:
                self._opaque(parent, e)
            else:
                self._whiteout(parent, pfd, base[4:], e)
            return

        if tf in (REG, REGA, CONT):
            self._regular(rel, pfd, base, e)
        elif tf == DIR:
            self._directory(rel, parent, pfd, base, e)
        elif tf == SYMLINK:
            self._symlink(rel, parent, pfd, base, e)
        elif tf == LINK:
            self._hardlink(rel, pfd, base, e)
        elif tf in (CHAR, BLOCKDEV, FIFO):
            self._device(rel, pfd, base, e)
        else:
            raise ArchiveError("%s: unhandled tar header type %r" % (self._who(), tf),
                               os.fsdecode(e.name))
        self.unpacked.add(rel)

    # Docker applies owner, xattrs, mode, times in this order: chown clears
    # setuid/setgid, so the mode comes after it.
    def _xattrs_fd(self, fd, e):
        for k, v in e.xattrs.items():
            try:
                os.setxattr(fd, k, v)
            except OSError as err:
                if err.errno not in _IGNORED_XATTR_ERRORS:
                    raise

    def _xattrs_path(self, path, e):
        for k, v in e.xattrs.items():
            try:
                os.setxattr(path, k, v, follow_symlinks=False)
            except OSError as err:
                if err.errno not in _IGNORED_XATTR_ERRORS:
                    raise

    @staticmethod
    def _times(e):
        mtime = e.mtime_ns
        atime = e.atime_ns
        if atime is None or atime < mtime:
            atime = mtime       # "last access should never be before last modified"
        return _clamp(atime), _clamp(mtime)

    def _regular(self, rel, pfd, base, e, data_from=None):
        fd = self._create(rel, pfd, base, lambda: os.open(base, _O_NEWFILE, 0o600, dir_fd=pfd))
        try:
            if data_from is None:
                self._payload(e, rel, fd)
            else:
                _copy_fd(data_from, fd)
            if self.chown:
                os.fchown(fd, e.uid, e.gid)
            if e.xattrs:
                self._xattrs_fd(fd, e)
            os.fchmod(fd, e.mode & 0o7777)
            os.utime(fd, ns=self._times(e))
        finally:
            os.close(fd)

    def _directory(self, rel, parent, pfd, base, e):
        made = True
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                made = False
                self._note_meta(rel, pfd, base)     # merge: metadata only
            else:
                self._move_aside(rel, pfd, base, False)
                os.mkdir(base, 0o700, dir_fd=pfd)
        if made:
            self.journal.created(rel)
            fd = self.dirs[rel] = os.open(base, O_DIR, dir_fd=pfd)
        else:
            fd = self._dir_fd(rel)
        if self.chown:
            os.fchown(fd, e.uid, e.gid)
        if e.xattrs:
            self._xattrs_fd(fd, e)
        os.fchmod(fd, e.mode & 0o7777)
        if made and self.chown and parent in self.plain_dirs:
            # What it is now is what was just set; a default ACL would
            # have come from the parent or the entry.
            self._set_plain(rel, _ACL_DEFAULT not in e.xattrs
                            and not (e.mode & stat.S_ISGID and e.gid != 0))
        else:
            self._check_plain(rel, fd)
        self.dir_times.append((rel, e.atime_ns, e.mtime_ns))

    def _apply_root(self, e):
        if e.typeflag != DIR:
            raise ArchiveError("%s: refusing to replace the layer root with a non-directory"
                               % self._who(), os.fsdecode(e.name))
        if self.unpack:
            return      # Unpack skips an existing "." directory
        self.journal.save_metadata(b"", self.root)
        fd = self.root_fd
        if self.chown:
            os.fchown(fd, e.uid, e.gid)
        if e.xattrs:
            self._xattrs_fd(fd, e)
        os.fchmod(fd, e.mode & 0o7777)
        self._check_plain(b"", fd)
        self.dir_times.append((b"", e.atime_ns, e.mtime_ns))
        self.unpacked.add(b"")

    def _symlink(self, rel, parent, pfd, base, e):
        if _escapes(parent, e.linkname):
            raise BreakoutError("%s: invalid symlink %r -> %r"
                                % (self._who(), os.fsdecode(rel), os.fsdecode(e.linkname)),
                                os.fsdecode(e.name))
        self._create(rel, pfd, base, lambda: os.symlink(e.linkname, base, dir_fd=pfd))
        if self.chown:
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            self._xattrs_path(self._proc(pfd, base), e)
        # lutimes with Docker's unclamped times.
        mtime = e.mtime_ns
        atime = e.atime_ns if e.atime_ns is not None and e.atime_ns >= mtime else mtime
        os.utime(base, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, rel, pfd, base, e):
        target = posixpath.normpath(e.linkname).lstrip(b"/")
        if target == b".." or target.startswith(b"../") or target in (b"", b"."):
            raise BreakoutError("%s: invalid hardlink %r -> %r"
                                % (self._who(), os.fsdecode(rel), os.fsdecode(e.linkname)),
                                os.fsdecode(e.name))
        if target.startswith(WHITEOUT_LINK_DIR_B + b"/"):
            self._plnk_link(rel, pfd, base, e, target)
            return
        target, tparent, tbase = self._resolve(target, e.name)
        if target.startswith(self.stash_name):
            raise BreakoutError("%s: hardlink %r names the apply journal"
                                % (self._who(), os.fsdecode(rel)), os.fsdecode(e.name))
        try:
            tpfd = self._dir_fd(tparent)
            tst = os.stat(tbase, dir_fd=tpfd, follow_symlinks=False)
        except FileNotFoundError:
            raise ArchiveError("%s: hardlink %r -> %r: target does not exist"
                               % (self._who(), os.fsdecode(rel), os.fsdecode(e.linkname)),
                               os.fsdecode(e.name))
        if stat.S_ISDIR(tst.st_mode):
            raise ArchiveError("%s: hardlink %r -> %r: target is a directory"
                               % (self._who(), os.fsdecode(rel), os.fsdecode(e.linkname)),
                               os.fsdecode(e.name))
        if target == rel:
            raise ArchiveError("%s: hardlink %r to itself" % (self._who(), os.fsdecode(rel)),
                               os.fsdecode(e.name))
        # the target's directory is looked up again: moving ``base`` aside
        # may have dropped cached descriptors
        self._create(rel, pfd, base, lambda: os.link(
            tbase, base, src_dir_fd=self._dir_fd(tparent), dst_dir_fd=pfd,
            follow_symlinks=False))
        # Docker then applies the link header's owner, xattrs, mode and
        # times to the shared inode, unless it is a symlink.
        if not stat.S_ISLNK(tst.st_mode):
            self._note_meta(target, tpfd, tbase)
        if self.chown:
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            self._xattrs_path(self._proc(pfd, base), e)
        if not stat.S_ISLNK(tst.st_mode):
            os.chmod(base, e.mode & 0o7777, dir_fd=pfd)
            os.utime(base, ns=self._times(e), dir_fd=pfd, follow_symlinks=False)

    def _device(self, rel, pfd, base, e):
        kind = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[e.typeflag]
        dev = os.makedev(e.devmajor, e.devminor)
        self._create(rel, pfd, base,
                     lambda: os.mknod(base, kind | (e.mode & 0o7777), dev, dir_fd=pfd))
        if self.chown:
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            self._xattrs_path(self._proc(pfd, base), e)
        os.chmod(base, e.mode & 0o7777, dir_fd=pfd)
        os.utime(base, ns=self._times(e), dir_fd=pfd, follow_symlinks=False)

    # -- whiteouts ----------------------------------------------------------
    def _whiteout(self, parent, pfd, victim, e):
        rel = parent + b"/" + victim if parent else victim
        if not victim or victim in (b".", b".."):
            raise ArchiveError("%s: bad whiteout" % self._who(), os.fsdecode(e.name))
        if rel.startswith(self.stash_name):
            raise BreakoutError("%s: whiteout names the apply journal" % self._who(),
                                os.fsdecode(e.name))
        self._remove_existing(rel, pfd, victim)
        if self.overlay:
            # overlayWhiteoutConverter.ConvertRead: mknod(name, S_IFCHR, 0),
            # owned as the whiteout entry.
            os.mknod(victim, stat.S_IFCHR, 0, dir_fd=pfd)
            self.journal.created(rel)
            if self.chown:
                os.chown(victim, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, parent, e):
        pfd = self._dir_fd(parent)
        if self.overlay:
            if parent:
                gp, sep, b = parent.rpartition(b"/")
                self._note_meta(parent, self._dir_fd(gp), b)
            else:
                self.journal.save_metadata(b"", self.root)
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        self._clear_opaque(parent)

    def _clear_opaque(self, dir_rel):
        """Remove what the layer did not write below ``dir_rel`` (Docker's walk)."""
        dfd = self._dir_fd(dir_rel)
        for name in sorted(os.listdir(dfd)):
            name = os.fsencode(name)
            if not dir_rel and name == self.stash_name:
                continue
            rel = dir_rel + b"/" + name if dir_rel else name
            if rel in self.unpacked:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    self._clear_opaque(rel)
                    dfd = self._dir_fd(dir_rel)
            else:
                self._remove_existing(rel, dfd, name)

    # -- aufs hard link directory ---------------------------------------------
    def _keep_plnk(self, e, base):
        """Docker extracts .wh..wh.plnk/* aside so that links to them resolve."""
        sfd = self.journal.stash()
        slot = b"plnk-" + self.journal.new_slot()
        fd = os.open(slot, _O_NEWFILE, 0o600, dir_fd=sfd)
        try:
            if e.data_size:
                e.copy_to_fd(fd)
        finally:
            os.close(fd)
        self.plnk[base] = (e, slot)

    def _plnk_link(self, rel, pfd, base, e, target):
        src = self.plnk.get(target.rpartition(b"/")[2])
        if src is None:
            raise ArchiveError("%s: invalid aufs hardlink %r" % (self._who(), os.fsdecode(rel)),
                               os.fsdecode(e.name))
        src_entry, slot = src
        sfd = os.open(slot, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.journal.stash())
        try:
            self._regular(rel, pfd, base, src_entry, data_from=sfd)
        finally:
            os.close(sfd)

    # -- end and undo ---------------------------------------------------------
    def _finish(self):
        # Directory times last, as Docker: creating entries changed them.
        # Docker passes a zero atime, which its Chtimes turns into the epoch.
        self.root_times = None
        for rel, atime, mtime in self.dir_times:
            atime = _clamp(atime) if atime is not None else 0
            if not rel:
                self.root_times = (atime, _clamp(mtime))
                continue
            parent, sep, base = rel.rpartition(b"/")
            try:
                pfd = self._dir_fd(parent)
                os.utime(base, ns=(atime, _clamp(mtime)), dir_fd=pfd,
                         follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, ArchiveError):
                pass    # deleted or replaced later in this layer
        self._drop_dirs()

    def commit(self):
        """After success: drop the journal. Past this point nothing is undone."""
        self.journal.commit(self.root_times)

    def rollback(self):
        self._drop_dirs()
        return self.journal.rollback()

    def close(self):
        self._drop_dirs()
        self.journal.close()
        os.close(self.root_fd)


def apply_layer(root, stream, whiteout_format=AUFS, layer_id=None, chown=None,
                engine_version=None):
    """Apply the layer tar ``stream`` onto ``root``.

    ``whiteout_format``: AUFS is Docker's UnpackLayer (naive apply: ``.wh.X``
    deletes X, ``.wh..wh..opq`` deletes what this layer did not write in its
    directory, other ``.wh..wh.*`` skipped); OVERLAY is Unpack with the
    overlay converter (whiteouts kept as 0/0 character devices, an existing
    path of that name replaced; opaque as ``trusted.overlay.opaque=y``);
    LITERAL is Unpack with no converter (``.wh.`` files kept as files).

    Returns the sum of the entries' header sizes (Docker's ApplyDiff size).
    All or nothing: on any failure the tree under ``root`` is restored and a
    GraphDriverError naming the layer and tar entry is raised. ``chown``
    (default: when running as root) sets owners from the tar.
    ``engine_version``: whose rules for missing parents (archive.py's module
    doc), the newest engine's when not given.
    """
    applier = _Applier(root, whiteout_format, layer_id, chown, engine_version)
    try:
        try:
            size = applier.run(stream)
        except BaseException as e:
            entry = applier.entry_name()
            problems = applier.rollback()
            suffix = ""
            if problems:
                suffix = "; ROLLBACK INCOMPLETE: " + "; ".join(problems)
            who = applier._who()
            if isinstance(e, ArchiveError):
                if suffix:
                    raise type(e)(str(e) + suffix) from e
                if applier.layer and applier.layer not in str(e):
                    raise type(e)("%s: %s" % (who, e)) from e
                raise
            if isinstance(e, GraphDriverError):
                raise GraphDriverError("%s: %s%s" % (who, e, suffix)) from e
            if isinstance(e, OSError):
                raise GraphDriverError("%s: applying tar entry %r: %s%s" % (
                    who, entry, e.strerror or e, suffix)) from e
            if isinstance(e, (ValueError, RecursionError)):
                raise ArchiveError("%s: %s%s" % (who, e, suffix), entry) from e
            raise
        try:
            applier.commit()
        except (OSError, GraphDriverError) as e:
            # The layer is applied; only the journal could not be deleted.
            raise GraphDriverError(
                "%s: applied, but its apply journal %s could not be removed (%s); "
                "remove_stale_stash() deletes it" % (
                    applier._who(), os.fsdecode(applier.root + b"/" + applier.stash_name), e))
        return size
    finally:
        applier.close()
