"""Docker's layer tar rules (moby pkg/archive), in one place for every driver.

* :func:`tar_tree` — ``TarWithOptions``: a tar of a tree, optionally of some
  paths only, converting overlay whiteouts to the wire form;
* :func:`export_changes` — ``ExportChanges``: a tar of a list of changes,
  deletions as ``.wh.<name>`` entries;
* :func:`apply_layer` — ``UnpackLayer`` (naive apply), or with
  ``whiteout_format=OVERLAY`` what ``Unpack`` with the overlay whiteout
  converter does (whiteouts kept on disk as 0/0 character devices, opaque
  directories as ``trusted.overlay.opaque=y``).

Engine 23.0 changed three of these rules, and ``engine_version`` (every
writer and apply_layer take it; the newest engine's rules when not given)
says whose to follow. 20.10 writes the file type bits into a header's mode
(``0100755``: fillGo18FileTypeBits, removed by moby #44083) and the owner's
user and group names looked up on the host (Go's tar.FileInfoHeader; 23+
uses FileInfoHeaderNoLookups and writes none), so the same tree gives other
tar bytes and a committed layer another DiffID; and its UnpackLayer makes
the missing parents of an entry 0600 (moby #44196 made them 0755, as Unpack
always did). Each is compared with both engines in
tests/integration/test_archive_docker.py.

Streams returned here are readable binary file objects produced lazily:
nothing is read from disk before the consumer reads, and ``close()`` stops
production and then calls ``on_close`` (drivers unmount there: "diff() keeps
the layer mounted until its stream is closed").

Apply is all or nothing. Docker relies on a chroot to contain a hostile tar
and leaves a half-applied layer on error; here every path is resolved from
an open descriptor of the layer root, one component at a time with
``O_NOFOLLOW``, so the kernel never follows a symlink for us. Docker's
chroot does follow one in an entry's parent path (a usrmerge base has
``bin -> usr/bin``, and a layer may then carry ``bin/foo``); so do we, by
reading the link ourselves, when it is relative and stays inside the root.
An absolute or escaping one there is refused with BreakoutError.
Every change is journaled so that any failure puts the layer back as it was:

* paths the layer creates are recorded and removed on failure;
* paths it replaces or deletes are not deleted but renamed into a stash
  directory ``.strata-apply-<random>`` inside the layer root (inside, so the
  rename never crosses a filesystem: the root may be a btrfs subvolume or a
  mount), renamed back on failure and deleted on success;
* metadata of existing directories it merges into (owner, mode, xattrs,
  times) and the times of existing directories whose entries it changes are
  saved and restored on failure.

A crash in the middle leaves the stash directory in the root: the layer is
then half applied (Docker's layer store never registered it and removes such
layers); :func:`remove_stale_stash` deletes leftover stash directories if the
layer is to be kept anyway.
"""

import errno
import fcntl
import io
import os
import posixpath
import re
import stat
import time

from .errors import ArchiveError, BreakoutError, GraphDriverError
from .priority import parse_version
from . import tarstream
from .tarstream import (BLOCK, CHAR, BLOCKDEV, CONT, DIR, FIFO, LINK, REG, REGA,
                        SYMLINK, XGLOBAL, MODE_TYPE_BITS, END_OF_ARCHIVE,
                        encode_header)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
WHITEOUT_LINK_DIR = ".wh..wh.plnk"
AUFS = "aufs"
OVERLAY = "overlay"
# Docker's Unpack with the aufs whiteout format: no converter, so .wh.<name>
# and .wh..wh..opq entries are written as the files they are (fuse-overlayfs
# reads them on disk). apply_layer only; the strata fuse-overlayfs driver.
LITERAL = "literal"

# The first engine with today's pkg/archive rules (see the module doc).
ARCHIVE_RULES_SINCE = (23, 0)


def legacy_rules(engine_version=None):
    """Does Docker Engine ``engine_version`` follow 20.10's pkg/archive rules
    (type bits and owner names in headers, 0600 implied parents)? None: the
    newest engine, which does not."""
    v = parse_version(engine_version)
    return v is not None and v < ARCHIVE_RULES_SINCE


# Symlinks followed in one entry's parent path, as the kernel's MAXSYMLINKS:
# a loop ends in BreakoutError instead of a hang.
MAX_SYMLINK_HOPS = 40

_WH = WHITEOUT_PREFIX.encode()
_WH_META = WHITEOUT_META_PREFIX.encode()
_WH_OPQ = WHITEOUT_OPAQUE.encode()
_WH_PLNK = WHITEOUT_LINK_DIR.encode()

OPAQUE_XATTR = "trusted.overlay.opaque"
CAPABILITY_XATTR = "security.capability"

STASH_PREFIX = ".strata-apply-"
_STASH_PREFIX_B = STASH_PREFIX.encode()

_CHUNK = 1 << 20
_SMALL = 1 << 16    # files up to this size are read in one go
# Docker's Chtimes clamps times outside [epoch, maxTime] to the epoch.
_MAX_NS = (1 << 63) - 1
_MAX_S = _MAX_NS // 1000000000


def _fs(path):
    return path if isinstance(path, bytes) else os.fsencode(path)


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


class ChunkStream(io.RawIOBase):
    """A readable binary file object over a generator of bytes chunks.

    ``close()`` closes the generator (which releases its open files) and
    then calls ``on_close`` once. An error raised while producing is raised
    from ``read()`` as a GraphDriverError. There is no descriptor: a
    consumer that needs one (a subprocess's stdin) copies from ``read()``.
    """

    # ``if self.closed`` carries a pylint disable: ``closed`` is io.IOBase's
    # flag, a C getset descriptor that astroid models as a class, so pylint
    # takes it for a constant (using-constant-test); at run time it is a bool.

    # The directory the payloads are read from, when each is the file there
    # that its entry names (a layer rebuilt from its tar-split): an applier
    # may then clone those files (FICLONE) instead of writing their bytes.
    files_root = None

    def __init__(self, chunks, on_close=None):
        super().__init__()
        self._gen = chunks
        self._on_close = on_close
        self._pending = memoryview(b"")

    def readable(self):
        return True

    def _next(self):
        while not self._pending:
            try:
                chunk = next(self._gen)
            except StopIteration:
                return False
            except OSError as e:
                where = os.fsdecode(e.filename) + ": " if e.filename else ""
                raise GraphDriverError("producing a layer tar: %s%s"
                                       % (where, e.strerror or e)) from e
            self._pending = memoryview(chunk)
        return True

    def readinto(self, b):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self._next():
            k = min(len(view) - n, len(self._pending))
            view[n:n + k] = self._pending[:k]
            self._pending = self._pending[k:]
            n += k
        return n

    def read(self, size=-1):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def readall(self):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed layer stream")
        parts = []
        while self._next():
            parts.append(bytes(self._pending))
            self._pending = memoryview(b"")
        return b"".join(parts)

    def close(self):
        if self.closed:  # pylint: disable=using-constant-test
            return
        try:
            self._gen.close()
        finally:
            super().close()
            cb, self._on_close = self._on_close, None
            if cb is not None:
                cb()


# ---------------------------------------------------------------------------
# Writing: addTarFile, TarWithOptions, ExportChanges
# ---------------------------------------------------------------------------

def _lgetxattr(path, name):
    # listxattr first: most files have none, and a failing getxattr costs
    # an exception each.
    try:
        if name not in os.listxattr(path, follow_symlinks=False):
            return None
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


_NO_TYPE_BITS = dict.fromkeys(MODE_TYPE_BITS, 0)


class _TarAppender(object):
    """pkg/archive's tarAppender: one entry per path, hard links by inode."""

    def __init__(self, whiteout_format=None, engine_version=None):
        self.seen = {}
        self.overlay = whiteout_format == OVERLAY
        legacy = legacy_rules(engine_version)
        self.names = {} if legacy else None
        self.type_bits = MODE_TYPE_BITS if legacy else _NO_TYPE_BITS

    def _names(self, uid, gid):
        """Docker 20.10's writer (Go's tar.FileInfoHeader) looks the owner's
        user and group names up on the host; Docker 23+ writes none."""
        if self.names is None:
            return b"", b""
        key = (uid, gid)
        got = self.names.get(key)
        if got is None:
            import grp
            import pwd
            try:
                uname = os.fsencode(pwd.getpwuid(uid).pw_name)
            except KeyError:
                uname = b""
            try:
                gname = os.fsencode(grp.getgrgid(gid).gr_name)
            except KeyError:
                gname = b""
            got = self.names[key] = (uname, gname)
        return got

    def entry(self, path, name):
        """Yield the chunks of the entry for ``path`` named ``name`` (bytes)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return      # vanished since it was listed: Docker logs and goes on
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return      # Docker skips sockets
        isdir = fmt == stat.S_IFDIR
        if isdir and not name.endswith(b"/"):
            name += b"/"
        mode = (st.st_mode & 0o7777) | self.type_bits[fmt]
        size = 0
        linkname = b""
        devmajor = devminor = 0
        typeflag = REG
        if fmt == stat.S_IFREG:
            size = st.st_size
        elif isdir:
            typeflag = DIR
        elif fmt == stat.S_IFLNK:
            typeflag = SYMLINK
            linkname = os.readlink(path)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            typeflag = CHAR if fmt == stat.S_IFCHR else BLOCKDEV
            devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            typeflag = FIFO
        whiteout = self.overlay and typeflag == CHAR and st.st_rdev == 0
        if not isdir and st.st_nlink > 1 and not whiteout:
            # Docker keys hard links by inode number alone.
            first = self.seen.get(st.st_ino)
            if first is not None:
                typeflag, linkname, size = LINK, first, 0
            else:
                self.seen[st.st_ino] = name
        xattrs = None
        cap = _lgetxattr(path, CAPABILITY_XATTR)
        if cap is not None:
            xattrs = {CAPABILITY_XATTR: cap}
        mtime = st.st_mtime_ns // 1000000000      # Docker truncates to seconds
        opaque_wo = None
        if whiteout:
            # overlayWhiteoutConverter.ConvertWrite: a 0/0 char device is
            # the whiteout .wh.<name>, an empty 0600 regular file.
            d, sep, b = name.rpartition(b"/")
            name = (d + b"/" if d else b"") + _WH + b
            typeflag, mode, size, devmajor, devminor = REG, 0o600, 0, 0, 0
        elif self.overlay and isdir:
            if _lgetxattr(path, OPAQUE_XATTR) == b"y":
                # The opaque marker: a regular file inheriting the directory's
                # owner and permission bits, mtime zero (Go writes the epoch).
                opaque_wo = encode_header(name + _WH_OPQ, mode & 0o777, st.st_uid,
                                          st.st_gid, 0, 0, REG)
        fd = None
        if typeflag == REG and size:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return
        uname, gname = self._names(st.st_uid, st.st_gid)
        try:
            header = encode_header(name, mode, st.st_uid, st.st_gid, size, mtime, typeflag,
                                   linkname, devmajor, devminor, xattrs, uname, gname)
            if fd is not None and size <= _SMALL:
                # A small file goes out as one chunk: header, data, padding.
                data = os.read(fd, size)
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        raise GraphDriverError(
                            "%s shrank while it was being archived (tar entry %r)"
                            % (os.fsdecode(path), os.fsdecode(name)))
                    data += more
                yield header + data + b"\0" * (-size & (BLOCK - 1))
                return
            yield header
            if opaque_wo is not None:
                yield opaque_wo
            if fd is not None:
                left = size
                while left:
                    data = os.read(fd, min(left, _CHUNK))
                    if not data:
                        raise GraphDriverError(
                            "%s shrank while it was being archived (tar entry %r)"
                            % (os.fsdecode(path), os.fsdecode(name)))
                    left -= len(data)
                    yield data
                pad = -size & (BLOCK - 1)
                if pad:
                    yield b"\0" * pad
        finally:
            if fd is not None:
                os.close(fd)


def _walk(root, rel):
    """Go's filepath.Walk below root/rel: depth first, names sorted bytewise."""
    path = root + b"/" + rel if rel else root
    try:
        with os.scandir(path) as it:
            children = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except (NotADirectoryError, FileNotFoundError):
        return
    for n, isdir in children:
        child = rel + b"/" + n if rel else n
        yield child
        if isdir:
            yield from _walk(root, child)


def _compile_patterns(patterns):
    """Docker's exclude patterns ('!' negates, last match wins; '*' stays in a
    component), each matching a path or any of its parents."""
    out = []
    for p in patterns or ():
        neg = p.startswith("!")
        if neg:
            p = p[1:]
        p = posixpath.normpath(p).lstrip("/")
        rx = ""
        for c in p:
            rx += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        out.append((neg, re.compile(os.fsencode("(?:%s)(?:/.*)?\\Z" % rx), re.S)))
    return out


def _excluded(rel, patterns):
    hit = False
    for neg, rx in patterns:
        if rx.match(rel):
            hit = not neg
    return hit


def _tree_chunks(root, include, whiteout_format, exclude, engine_version):
    appender = _TarAppender(whiteout_format, engine_version)
    patterns = _compile_patterns(exclude)
    if include is None:
        include = [b"."]
    seen = set()
    for inc in include:
        inc = posixpath.normpath(_fs(inc)).lstrip(b"/")
        if inc in (b"", b"."):
            inc = b""
        elif inc == b".." or inc.startswith(b"../"):
            raise GraphDriverError("include path %r is outside %s" % (inc, os.fsdecode(root)))
        names = []
        if inc:
            names.append(inc)
            try:
                if stat.S_ISDIR(os.lstat(root + b"/" + inc).st_mode):
                    names = None
            except FileNotFoundError:
                continue
        if names is None:
            names = [inc]
            names.extend(_walk(root, inc))
        elif not inc:
            names = _walk(root, b"")
        for rel in names:
            if rel in seen or not rel:
                continue
            if patterns and _excluded(rel, patterns):
                continue
            seen.add(rel)
            yield from appender.entry(root + b"/" + rel, rel)
    yield END_OF_ARCHIVE


def tar_tree(root, include=None, whiteout_format=AUFS, on_close=None, exclude=None,
             engine_version=None):
    """Docker's TarWithOptions: a readable stream of the tree at ``root``.

    ``include``: paths relative to root to archive (each walked in Docker's
    order), default the whole tree (the root itself is not an entry).
    ``whiteout_format=OVERLAY`` converts on-disk overlay whiteouts and opaque
    directories to the wire form. ``exclude``: Docker exclude patterns
    (aufs passes ``['.wh..wh.*', '!.wh..wh..opq']``). ``engine_version``:
    whose header rules (module doc): 20.10's type bits and owner names
    looked up on this host, or, by default, the newest engine's: neither.
    """
    root = _fs(os.path.abspath(root))
    if not os.path.isdir(root):
        raise GraphDriverError("cannot archive %s: not a directory" % os.fsdecode(root))
    return ChunkStream(_tree_chunks(root, include, whiteout_format, exclude, engine_version),
                       on_close)


def _changes_chunks(root, changes, engine_version):
    appender = _TarAppender(None, engine_version)
    items = sorted(changes, key=lambda c: _fs(c.path))   # Go sorts by path
    for change in items:
        p = _fs(change.path)
        if change.kind == "D":
            d, sep, base = p.rpartition(b"/")
            name = (d + b"/" + _WH + base).lstrip(b"/")
            # Go rounds a header of unset format to the nearest second.
            now = int(time.time() + 0.5)
            yield encode_header(name, 0, 0, 0, 0, now, REG)
        else:
            rel = p.lstrip(b"/")
            if not rel:
                continue
            path = root(change.path) if callable(root) else root + b"/" + rel
            if path is not None:    # None: not there, which Docker logs and skips
                yield from appender.entry(_fs(path), rel)
    yield END_OF_ARCHIVE


def export_changes(root, changes, on_close=None, engine_version=None):
    """Docker's ExportChanges: a readable tar stream of ``changes`` under ``root``.

    Deletions become empty ``.wh.<name>`` entries stamped now; the rest are
    written from ``root`` in path order, hard links kept. ``engine_version``
    as for :func:`tar_tree`. ``root`` may instead be a function of a change's
    path ('/etc/hosts') giving the file to write, None when there is none:
    a tree read from several directories (changes.Union.path).
    """
    if not callable(root):
        root = _fs(os.path.abspath(root))
    return ChunkStream(_changes_chunks(root, list(changes), engine_version), on_close)


# ---------------------------------------------------------------------------
# Applying: UnpackLayer, all or nothing
# ---------------------------------------------------------------------------

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FICLONE = 0x40049409           # linux/fs.h: _IOW(0x94, 9, int)
_CLONE_MIN = 64 * 1024          # below this a write costs less than open + ioctl
# Not between these two files (other filesystems, no reflinks): stop trying.
_NO_CLONE = (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.ENOSYS, errno.EPERM)
_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EPERM)
_MAX_CACHED_DIRS = 2048


_ACL_DEFAULT = "system.posix_acl_default"


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


class _Saved(object):
    """Metadata of an existing path, to restore it on rollback."""

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


class _Applier(object):

    def __init__(self, root, whiteout_format, layer_id, chown, engine_version=None):
        self.root = _fs(os.path.abspath(root))
        self.overlay = whiteout_format == OVERLAY
        self.literal = whiteout_format == LITERAL
        # overlay and literal are Docker's Unpack; aufs is UnpackLayer
        self.unpack = self.overlay or self.literal
        if whiteout_format not in (AUFS, OVERLAY, LITERAL):
            raise GraphDriverError("unknown whiteout format %r" % (whiteout_format,))
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
        self.root_saved = _Saved.of(self.root)
        self.dirs = {b"": self.root_fd}     # rel dir -> open O_NOFOLLOW descriptor
        # Directories where a file root creates is already what a plain tar
        # entry asks for: owner 0:0 (no setgid to another group) and the
        # open(2) mode as given (no default ACL). The fast path skips
        # fchown/fchmod there; GNU tar makes both calls every time.
        self.plain_dirs = set()
        self.umask = _current_umask()
        self.root_ids = os.geteuid() == 0 and os.getegid() == 0
        self._check_plain(b"", self.root_fd)
        self.new = set()                    # rel paths this apply created
        self.journal = []                   # undo log, replayed backwards
        self.saved_times = set()            # dirs whose times are journaled
        self.saved_meta = set()             # paths whose metadata is journaled
        self.unpacked = set()               # Docker's unpackedPaths
        self.dir_times = []                 # (rel, atime_ns, mtime_ns) set at the end
        self.stash_name = _STASH_PREFIX_B + os.urandom(8).hex().encode()
        self.stash_fd = None
        self.stash_seq = 0
        self.plnk = {}                      # aufs hard link dir: base -> (entry, stash name)
        self.entry = None
        self.plain_name = None
        self.clone_root = None              # see ChunkStream.files_root

    def _who(self):
        return "layer %s" % self.layer if self.layer else "apply"

    # -- resolution -----------------------------------------------------
    def _dir_fd(self, rel, create=False):
        """Open descriptor of directory ``rel``; never follows a symlink."""
        fd = self.dirs.get(rel)
        if fd is not None:
            return fd
        parent, sep, base = rel.rpartition(b"/")
        pfd = self._dir_fd(parent, create)
        try:
            fd = os.open(base, _O_DIR, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise
            # Docker: MkdirAll(parent) for an entry whose parent is missing.
            self._note_change(parent)
            os.mkdir(base, self.parent_mode, dir_fd=pfd)
            self._created(rel)
            os.chmod(base, self.parent_mode, dir_fd=pfd)
            fd = os.open(base, _O_DIR, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise BreakoutError(
                        "%s: %r is a symlink: refusing to write through it"
                        % (self._who(), os.fsdecode(rel)), self._entry_name())
                raise ArchiveError("%s: %r is not a directory"
                                   % (self._who(), os.fsdecode(rel)), self._entry_name())
            raise
        self.dirs[rel] = fd
        self._check_plain(rel, fd)
        return fd

    def _check_plain(self, rel, fd, st=None):
        self.plain_dirs.discard(rel)
        if st is None:
            st = os.fstat(fd)
        if st.st_mode & stat.S_ISGID and st.st_gid != 0:
            return
        try:
            if _ACL_DEFAULT in os.listxattr(fd):
                return
        except OSError:
            return
        self.plain_dirs.add(rel)

    def _drop_dirs(self, under=None):
        """Forget cached directory descriptors (all, or ``under`` and below)."""
        if under is None:
            keys = [k for k in self.dirs if k]
        else:
            pre = under + b"/"
            keys = [k for k in self.dirs if k == under or k.startswith(pre)]
        for k in keys:
            os.close(self.dirs.pop(k))
            self.plain_dirs.discard(k)

    def _entry_name(self):
        if self.entry is not None:
            return os.fsdecode(self.entry.name)
        return os.fsdecode(self.plain_name) if self.plain_name is not None else None

    def _proc(self, pfd, base):
        return b"/proc/self/fd/%d/%s" % (pfd, base)

    # -- journal ----------------------------------------------------------
    def _created(self, rel):
        parent = rel.rpartition(b"/")[0]
        if parent not in self.new:
            self.journal.append(("c", rel))
        self.new.add(rel)

    def _create(self, rel, pfd, base, make):
        """Run ``make()``, which creates ``base``; whatever is already there
        is moved aside (journaled) first. Returns what ``make`` returns."""
        try:
            made = make()
        except FileExistsError:
            self._remove_existing(rel, pfd, base)
            made = make()
        self._created(rel)
        return made

    def _note_change(self, dir_rel):
        """Entries of ``dir_rel`` are about to change: journal its times."""
        if dir_rel in self.new or dir_rel in self.saved_times:
            return
        if not dir_rel:
            self.saved_times.add(dir_rel)
            return      # the root's metadata is saved once, up front
        pfd = self._dir_fd(dir_rel.rpartition(b"/")[0])
        st = os.stat(dir_rel.rpartition(b"/")[2], dir_fd=pfd, follow_symlinks=False)
        self.journal.append(("t", dir_rel, st.st_atime_ns, st.st_mtime_ns))
        self.saved_times.add(dir_rel)

    def _note_meta(self, rel, pfd, base):
        """``rel`` (existing, not ours) is about to get new metadata."""
        if rel in self.new or rel in self.saved_meta:
            return
        self.saved_meta.add(rel)
        if not rel:
            return      # the root: saved in __init__
        self.journal.append(("m", rel, _Saved.of(self._proc(pfd, base))))

    def _stash(self):
        if self.stash_fd is None:
            os.mkdir(self.stash_name, 0o700, dir_fd=self.root_fd)
            self.stash_fd = os.open(self.stash_name, _O_DIR, dir_fd=self.root_fd)
        return self.stash_fd

    def _move_aside(self, rel, pfd, base, isdir):
        """Docker's RemoveAll(rel), undoable: rename it into the stash."""
        self._note_change(rel.rpartition(b"/")[0])
        sfd = self._stash()
        self.stash_seq += 1
        slot = b"%d" % self.stash_seq
        os.rename(base, slot, src_dir_fd=pfd, dst_dir_fd=sfd)
        self.journal.append(("s", rel, slot))
        if isdir:
            self._drop_dirs(rel)
        # Paths created in there are gone from the tree now.
        if rel in self.new:
            self.new.discard(rel)
            if isdir:
                pre = rel + b"/"
                self.new = {p for p in self.new if not p.startswith(pre)}

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
        reader = tarstream.TarReader(stream)
        entries = iter(reader)
        peek = reader.peek_plain
        plain_file = self._plain_file
        fast = self._fast_regular
        apply = self._apply
        try:
            while True:
                plain = peek()
                if plain is not None and plain_file(reader, plain):
                    size += plain[5]
                    continue
                entry = next(entries, None)
                if entry is None:
                    break
                self.entry = entry
                if not fast(entry):
                    if entry.typeflag == XGLOBAL:
                        continue    # Go hands it over with Size 0; no effect
                    apply(entry)
                size += entry.size
            self.entry = None
            self._finish()
        finally:
            reader.close()
        return size

    def _normalize(self, entry):
        # filepath.Clean, and absolute names are relative to the root.
        name = posixpath.normpath(entry.name).lstrip(b"/")
        if name == b".." or name.startswith(b"../"):
            raise BreakoutError("%s: %r is outside the layer root"
                                % (self._who(), os.fsdecode(entry.name)), os.fsdecode(entry.name))
        if name == b".":
            return b""
        parent, sep, base = name.rpartition(b"/")
        if parent:
            parent = self._resolve_parent(parent, entry.name)
            name = parent + b"/" + base if parent else base
        if name.startswith(self.stash_name):
            raise BreakoutError("%s: %r names the apply journal"
                                % (self._who(), os.fsdecode(entry.name)), os.fsdecode(entry.name))
        return name

    def _resolve_parent(self, rel, entry_name):
        """``rel`` with its symlinks resolved inside the root, as Docker's
        chroot would; refuses absolute and escaping ones (see module doc).

        Every component is lstat'ed below a prefix already known to hold
        no symlink, so no path handed to the kernel contains one.
        """
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
            path = self.root + b"/" + b"/".join(out)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue    # created (or refused) by the entry's own apply
            if not stat.S_ISLNK(st.st_mode):
                continue
            target = os.readlink(path)
            hops += 1
            if target.startswith(b"/") or hops > MAX_SYMLINK_HOPS:
                raise BreakoutError(
                    "%s: %r is a symlink to %r: refusing to write through it"
                    % (self._who(), os.fsdecode(b"/".join(out)), os.fsdecode(target)),
                    os.fsdecode(entry_name))
            out.pop()
            parts = target.split(b"/") + parts
        return b"/".join(out)

    def _plain_file(self, reader, plain):
        """Like _fast_regular, straight from the reader's buffer, with no
        Entry at all (see TarReader.peek_plain). False: nothing was done."""
        name, mode, uid, gid, mtime, size = plain[:6]
        if name[:2] == b"./":
            name = name[2:]
        if (not name or name[:1] in (b".", b"/") or b"/." in name or b"//" in name
                or name[-1:] == b"/"):
            return False
        parent, sep, base = name.rpartition(b"/")
        pfd = self.dirs.get(parent)
        new = self.new
        if pfd is None or (parent not in new and parent not in self.saved_times):
            return False
        if mtime > _MAX_S:
            return False
        mode &= 0o7777
        plain_dir = parent in self.plain_dirs
        need_chown = self.chown and (uid or gid or not self.root_ids or not plain_dir)
        need_chmod = need_chown or mode & (0o7000 | self.umask) or not plain_dir
        self.entry = None
        self.plain_name = name
        try:
            fd = os.open(base, _O_NEWFILE, mode & 0o777, dir_fd=pfd)
        except FileExistsError:
            return False
        if parent not in new:
            self.journal.append(("c", name))
        new.add(name)
        try:
            payload = reader.consume_plain(plain)
            if size and not (size >= _CLONE_MIN and self.clone_root is not None
                             and self._clone(name, fd, size)):
                n = os.write(fd, payload)
                if n != size:
                    tarstream._write_all(fd, payload[n:])
            if need_chown:
                os.fchown(fd, uid, gid)
            if need_chmod:
                os.fchmod(fd, mode)
            mtime *= 1000000000
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        self.unpacked.add(name)
        return True

    def _fast_regular(self, e):
        """The bulk of a layer, a new regular file in a known directory, with
        as few Python operations as possible. False: take the general path."""
        name = e.name
        if name[:2] == b"./":
            name = name[2:]     # GNU tar's "./" prefix
        if (e.typeflag != REG or e.xattrs or e.atime_ns is not None or not name
                or name[:1] in (b".", b"/") or b"/." in name or b"//" in name
                or name[-1:] == b"/"):
            return False
        parent, sep, base = name.rpartition(b"/")
        pfd = self.dirs.get(parent)
        new = self.new
        if pfd is None or (parent not in new and parent not in self.saved_times):
            return False
        mtime = e.mtime_ns
        if mtime < 0 or mtime > _MAX_NS:
            return False
        mode = e.mode & 0o7777
        # open(2) gives a new file root's ids and mode & ~umask: when that
        # is already what the entry wants, fchown and fchmod are not needed.
        plain = parent in self.plain_dirs
        need_chown = self.chown and (e.uid or e.gid or not self.root_ids or not plain)
        need_chmod = need_chown or mode & (0o7000 | self.umask) or not plain
        try:
            fd = os.open(base, _O_NEWFILE, mode & 0o777, dir_fd=pfd)
        except FileExistsError:
            return False
        if parent not in new:
            self.journal.append(("c", name))
        new.add(name)
        try:
            self._payload(e, name, fd)
            if need_chown:
                os.fchown(fd, e.uid, e.gid)
            if need_chmod:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        self.unpacked.add(name)
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
        if tf == XGLOBAL:
            return
        if len(self.dirs) > _MAX_CACHED_DIRS:
            # Only between entries: callers hold descriptors within one.
            self._drop_dirs()
        rel = self._normalize(e)
        parent, sep, base = rel.rpartition(b"/")

        if rel.startswith(_WH_META) and not self.literal:
            # aufs metadata (.wh..wh.plnk, .wh..wh.aufs) is skipped; files in
            # the hard link directory are kept aside for links to them.
            # .wh..wh..opq at the root is the root's opaque marker.
            if rel.startswith(_WH_PLNK + b"/") and tf in (REG, REGA, CONT):
                self._keep_plnk(e, base)
            if rel != _WH_OPQ:
                return

        if not rel:
            self._apply_root(e)
            return

        pfd = self._dir_fd(parent, create=True)
        if parent not in self.new and parent not in self.saved_times:
            # Before anything changes in it: its times, for a rollback.
            self._note_change(parent)

        if base.startswith(_WH) and not self.literal:
            if base == _WH_OPQ:
                self._opaque(parent, e)
            else:
                self._whiteout(parent, pfd, base[4:], e)
            return

        if tf in (REG, REGA, CONT):
            self._regular(rel, parent, pfd, base, e)
        elif tf == DIR:
            self._directory(rel, parent, pfd, base, e)
        elif tf == SYMLINK:
            self._symlink(rel, parent, pfd, base, e)
        elif tf == LINK:
            self._hardlink(rel, parent, pfd, base, e)
        elif tf in (CHAR, BLOCKDEV, FIFO):
            self._device(rel, parent, pfd, base, e)
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

    def _times(self, e):
        mtime = e.mtime_ns
        atime = e.atime_ns
        if atime is None or atime < mtime:
            atime = mtime       # "last access should never be before last modified"
        return _clamp(atime), _clamp(mtime)

    def _create_file(self, rel, parent, pfd, base):
        return self._create(rel, pfd, base,
                            lambda: os.open(base, _O_NEWFILE, 0o600, dir_fd=pfd))

    def _regular(self, rel, parent, pfd, base, e, data_from=None):
        fd = self._create_file(rel, parent, pfd, base)
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
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                self._note_meta(rel, pfd, base)     # merge: metadata only
            else:
                self._move_aside(rel, pfd, base, False)
                os.mkdir(base, 0o700, dir_fd=pfd)
                self._created(rel)
        else:
            if parent not in self.new:
                self.journal.append(("c", rel))
            self.new.add(rel)
        fd = self._dir_fd(rel)
        if self.chown:
            os.fchown(fd, e.uid, e.gid)
        if e.xattrs:
            self._xattrs_fd(fd, e)
        os.fchmod(fd, e.mode & 0o7777)
        self._check_plain(rel, fd)
        self.dir_times.append((rel, e))

    def _apply_root(self, e):
        if e.typeflag != DIR:
            raise ArchiveError("%s: refusing to replace the layer root with a non-directory"
                               % self._who(), os.fsdecode(e.name))
        if self.unpack:
            return      # Unpack skips an existing "." directory
        self.saved_meta.add(b"")
        fd = self.root_fd
        if self.chown:
            os.fchown(fd, e.uid, e.gid)
        if e.xattrs:
            self._xattrs_fd(fd, e)
        os.fchmod(fd, e.mode & 0o7777)
        self._check_plain(b"", fd)
        self.dir_times.append((b"", e))
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

    def _hardlink(self, rel, parent, pfd, base, e):
        target = posixpath.normpath(e.linkname).lstrip(b"/")
        if target == b".." or target.startswith(b"../") or target in (b"", b"."):
            raise BreakoutError("%s: invalid hardlink %r -> %r"
                                % (self._who(), os.fsdecode(rel), os.fsdecode(e.linkname)),
                                os.fsdecode(e.name))
        if target.startswith(_WH_PLNK + b"/"):
            self._plnk_link(rel, parent, pfd, base, e, target)
            return
        tparent, sep, tbase = target.rpartition(b"/")
        if tparent:
            tparent = self._resolve_parent(tparent, e.name)
            target = tparent + b"/" + tbase if tparent else tbase
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

    def _device(self, rel, parent, pfd, base, e):
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
            self._created(rel)
            if self.chown:
                os.chown(victim, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, parent, e):
        pfd = self._dir_fd(parent)
        if self.overlay:
            if parent:
                gp, sep, b = parent.rpartition(b"/")
                self._note_meta(parent, self._dir_fd(gp), b)
            else:
                self.saved_meta.add(b"")
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
        sfd = self._stash()
        self.stash_seq += 1
        slot = b"plnk-%d" % self.stash_seq
        fd = os.open(slot, _O_NEWFILE, 0o600, dir_fd=sfd)
        try:
            if e.data_size:
                e.copy_to_fd(fd)
        finally:
            os.close(fd)
        self.plnk[base] = (e, slot)

    def _plnk_link(self, rel, parent, pfd, base, e, target):
        src = self.plnk.get(target.rpartition(b"/")[2])
        if src is None:
            raise ArchiveError("%s: invalid aufs hardlink %r" % (self._who(), os.fsdecode(rel)),
                               os.fsdecode(e.name))
        src_entry, slot = src
        sfd = os.open(slot, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._stash())
        try:
            self._regular(rel, parent, pfd, base, src_entry, data_from=sfd)
        finally:
            os.close(sfd)

    # -- end and undo ---------------------------------------------------------
    def _finish(self):
        # Directory times last, as Docker: creating entries changed them.
        # Docker passes a zero atime, which its Chtimes turns into the epoch.
        self.root_times = None
        for rel, e in self.dir_times:
            atime = _clamp(e.atime_ns) if e.atime_ns is not None else 0
            if not rel:
                self.root_times = (atime, _clamp(e.mtime_ns))
                continue
            parent, sep, base = rel.rpartition(b"/")
            try:
                pfd = self._dir_fd(parent)
                os.utime(base, ns=(atime, _clamp(e.mtime_ns)), dir_fd=pfd,
                         follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, ArchiveError):
                pass    # deleted or replaced later in this layer
        self._drop_dirs()

    def commit(self):
        """After success: drop the journal. Past this point nothing is undone."""
        if self.stash_fd is not None:
            os.close(self.stash_fd)
            self.stash_fd = None
            try:
                _remove_tree_at(self.root_fd, self.stash_name)
            except OSError:
                _remove_path(self.root + b"/" + self.stash_name)   # chmods its way in
        if self.root_times is not None:
            os.utime(self.root_fd, ns=self.root_times)
        elif b"" not in self.saved_meta and not any(
                op[0] in "cs" and b"/" not in op[1] for op in self.journal):
            # Only the stash came and went: the root looks untouched.
            os.utime(self.root_fd, ns=(self.root_saved.atime, self.root_saved.mtime))

    def rollback(self):
        errors = []
        self._drop_dirs()
        if self.stash_fd is not None:
            os.close(self.stash_fd)
            self.stash_fd = None
        root = self.root
        stash = root + b"/" + self.stash_name
        times = []
        for op in reversed(self.journal):
            try:
                kind, rel = op[0], op[1]
                path = root + b"/" + rel
                if kind == "c":
                    _remove_path(path)
                elif kind == "s":
                    _remove_path(path)
                    os.rename(stash + b"/" + op[2], path)
                elif kind == "m":
                    if os.path.lexists(path):
                        op[2].restore(path)
                elif kind == "t":
                    times.append(op)
            except (OSError, GraphDriverError) as e:
                errors.append("%s: %s" % (os.fsdecode(op[1]), e))
        try:
            _remove_path(stash)
        except (OSError, GraphDriverError) as e:
            errors.append("%s: %s" % (os.fsdecode(stash), e))
        for kind, rel, atime, mtime in times:
            try:
                os.utime(root + b"/" + rel, ns=(atime, mtime), follow_symlinks=False)
            except (OSError, GraphDriverError) as e:
                errors.append("%s: %s" % (os.fsdecode(rel), e))
        try:
            self.root_saved.restore(root, full=b"" in self.saved_meta)
        except (OSError, GraphDriverError) as e:
            errors.append("%s: %s" % (os.fsdecode(root), e))
        return errors

    def close(self):
        self._drop_dirs()
        if self.stash_fd is not None:
            os.close(self.stash_fd)
        os.close(self.root_fd)


def _remove_path(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        from .fileutil import remove_tree
        remove_tree(path)
    else:
        os.unlink(path)


def _remove_tree_at(dfd, name):
    """rm -rf of ``name`` in directory ``dfd`` without following symlinks."""
    try:
        fd = os.open(name, _O_DIR, dir_fd=dfd)
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
                _remove_tree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def _copy_fd(src, dst):
    while True:
        data = os.read(src, _CHUNK)
        if not data:
            return
        tarstream._write_all(dst, data)


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
    ``engine_version``: whose rules for missing parents (module doc), the
    newest engine's when not given.
    """
    applier = _Applier(root, whiteout_format, layer_id, chown, engine_version)
    try:
        try:
            size = applier.run(stream)
        except BaseException as e:
            entry = applier._entry_name()
            problems = applier.rollback()
            suffix = ""
            if problems:
                suffix = "; ROLLBACK INCOMPLETE: " + "; ".join(problems)
            if isinstance(e, ArchiveError):
                if suffix:
                    raise type(e)(str(e) + suffix) from e
                if applier.layer and applier.layer not in str(e):
                    raise type(e)("%s: %s" % (applier._who(), e)) from e
                raise
            if isinstance(e, GraphDriverError):
                raise GraphDriverError("%s: %s%s" % (applier._who(), e, suffix)) from e
            if isinstance(e, OSError):
                raise GraphDriverError("%s: applying tar entry %r: %s%s" % (
                    applier._who(), entry, e.strerror or e, suffix)) from e
            if isinstance(e, (ValueError, RecursionError)):
                raise ArchiveError("%s: %s%s" % (applier._who(), e, suffix), entry) from e
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


def remove_stale_stash(root):
    """Delete apply journals a crash left in ``root``; return their names."""
    root = _fs(root)
    found = []
    for name in os.listdir(root):
        if name.startswith(_STASH_PREFIX_B):
            _remove_path(root + b"/" + name)
            found.append(os.fsdecode(name))
    return found
