"""The one tar reader and writer of the library, for layer tars.

Why not ``tarfile``: it builds a TarInfo object through many Python calls per
entry and copies payloads through its own buffers; a layer has tens of
thousands of entries. Here a header is one 512-byte slice of a large buffer,
parsed with a handful of slicing operations, and payloads go to their file
descriptors straight from that buffer (or with ``copy_file_range`` from a
tar that is a regular file).

Reading follows Go's ``archive/tar`` (what Docker uses) where formats are
ambiguous: PAX 'x' records apply to the next entry only (a second 'x' block
replaces the first), 'g' global headers are returned as entries of their own
and do not change later ones, GNU 'L'/'K' long names override PAX paths,
numeric fields may be octal or base-256, header-only types (links, devices,
directories, fifos) carry no payload whatever their size field says, and a
stream that ends on a block boundary, or after one or two zero blocks, ends
the archive.

Writing follows Go's ``archive/tar`` writer as Docker's ``pkg/archive`` drives
it (``Format = FormatPAX``): a plain USTAR header when every field fits
(long ASCII names split into prefix/name), otherwise a PAX 'x' header whose
records are sorted by key, named ``<dir>/PaxHeaders.0/<base>``, followed by a
PAX main header with the fields Go writes there. Two zero blocks end the
archive (Go does not pad to a 10 KiB record as GNU tar does).

Every :class:`Entry` keeps ``raw``, the exact bytes of all its header blocks
as they were in the stream (PAX 'x'/'g' and GNU 'L'/'K' blocks with their
data blocks and padding, then the entry's own header block), ``offset``
where those bytes start, ``data_size`` (the payload length actually present)
and, once the payload has been read or skipped, ``pad`` (the padding bytes
after the payload, raw). After the last entry, :meth:`TarReader.read_trailer`
returns the end-of-archive blocks and anything after them, raw.
Concatenating, in order, each entry's ``raw``, payload and ``pad``, then the
trailer, gives back the stream byte for byte.

An *observer* (the layer store's tar-split disassembler) sees that same
parse as it happens, so nothing parses a layer twice; it gets, in stream
order and covering every byte once:

* ``member(raw, name, size, data_size, typeflag)``: an entry's header bytes
  (``raw`` as above) and what tar-split records of it;
* ``payload(view)``: payload bytes, in pieces (a memoryview valid only
  during the call), ``data_size`` of them in all, whether the consumer
  reads, copies or skips them;
* ``padding(data)``: the padding after a payload;
* ``end(data)``: the end-of-archive blocks (``b""`` when the stream just
  stops on a block boundary), then ``trailing(data)`` for everything after
  them, read to EOF as Docker does ("discard trailing data but ensure
  metadata is picked up").

With an observer the payloads always pass through the reader's buffer (no
``copy_file_range``, no seeking over skipped payloads).
"""

import errno
import io
import os
import stat
import struct
import zlib

from .errors import ArchiveError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)

# Type flags, as one-character strings.
REG = "0"
REGA = "\0"
LINK = "1"
SYMLINK = "2"
CHAR = "3"
BLOCKDEV = "4"
DIR = "5"
FIFO = "6"
CONT = "7"
XHEADER = "x"
XGLOBAL = "g"
GNU_LONGNAME = "L"
GNU_LONGLINK = "K"
GNU_SPARSE = "S"

# Go's isHeaderOnlyType: these never carry a payload, whatever size says.
HEADER_ONLY = frozenset((LINK, SYMLINK, CHAR, BLOCKDEV, DIR, FIFO))

# Go's readSpecialFile limit for PAX and GNU long-name data.
MAX_SPECIAL = 1 << 20

_HAVE_CFR = [hasattr(os, "copy_file_range")]
_ZERO_BLOCK = b"\0" * BLOCK
_TERMB = (b"\0", b" ")
# One C call splits a header into its fields (octal fields apart from their
# terminator byte, for the fast path in _make_entry).
_HDR_FIELDS = struct.Struct("100s7sc7sc7sc11sc11sc8x1x100s8s32s32s16x155s12x")
_UNPACK = _HDR_FIELDS.unpack
_UNPACK_FROM = _HDR_FIELDS.unpack_from
# What TarReader.plain_members needs: the same fields up to the magic, the
# octal fields' terminators and the type flag as byte values.
_UNPACK_PLAIN = struct.Struct("100s7sB7sB7sB11sB11sB8xB100x8s").unpack_from
_PLAIN_TYPES = b"025"
_NO_XATTRS = {}     # shared, never mutated: most entries have none
_NO_PAX = {}
_ZERO_PADS = [b"\0" * n for n in range(BLOCK)]
_USTAR_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_STAR_TRAILER = b"tar\x00"
_ZERO7 = b"0000000"

# File type bits Docker puts back into the mode field (pkg/archive's
# fillGo18FileTypeBits, present in Docker 20.10), keyed by S_IFMT.
MODE_TYPE_BITS = {
    stat.S_IFREG: 0o100000, stat.S_IFDIR: 0o40000, stat.S_IFLNK: 0o120000,
    stat.S_IFCHR: 0o20000, stat.S_IFBLK: 0o60000, stat.S_IFIFO: 0o10000,
    stat.S_IFSOCK: 0o140000,
}


class Entry(object):
    """One archive member: its parsed header, raw header bytes, payload.

    ``name``, ``linkname``, ``uname``, ``gname`` are bytes; ``typeflag`` a
    one-character str; ``mtime`` whole seconds and ``mtime_ns``/``atime_ns``
    nanoseconds (``atime_ns`` None unless a PAX record gives it); ``pax``
    the PAX records (str -> bytes) and ``xattrs`` the ``SCHILY.xattr.*`` ones
    (treat both as read-only: entries without any share one empty dict).
    The payload must be consumed (read/chunks/copy_to_fd/skip) before the
    next entry is asked for, or it is skipped.
    """

    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime", "mtime_ns",
                 "atime_ns", "typeflag", "linkname", "uname", "gname",
                 "devmajor", "devminor", "pax", "xattrs", "raw", "offset",
                 "data_size", "pad", "_reader")

    def __repr__(self):
        return "<tar entry %r type %r size %d>" % (self.name, self.typeflag, self.size)

    @property
    def path(self):
        """The name as str (surrogate-escaped where not UTF-8)."""
        return os.fsdecode(self.name)

    def isdir(self):
        return self.typeflag == DIR

    def isreg(self):
        return self.typeflag in (REG, REGA, CONT)

    def read(self):
        """The whole remaining payload as bytes."""
        return self._reader._read_payload()

    def chunks(self):
        """Yield the remaining payload as memoryviews, each valid until the next."""
        return self._reader._payload_chunks()

    def copy_to_fd(self, fd):
        """Write the remaining payload to ``fd``; return the byte count."""
        return self._reader._copy_payload(fd)

    def skip(self):
        self._reader._skip_payload()


def _parse_octal(field):
    # Go trims NULs and spaces both sides, then stops at the first NUL.
    field = field.strip(b" \0")
    if not field:
        return 0
    cut = field.find(b"\0")
    if cut >= 0:
        field = field[:cut]
    if not field.isdigit() or b"8" in field or b"9" in field:
        raise ValueError("bad octal %r" % field)
    return int(field, 8)


def _parse_numeric(field):
    if field[0] & 0x80:
        # Base-256 (GNU/STAR): sign in bit 0x40 of the first byte; Go inverts
        # the bytes of a negative number and returns ^x.
        inv = 0xFF if field[0] & 0x40 else 0
        x = (field[0] ^ inv) & 0x7F
        for c in field[1:]:
            x = (x << 8) | (c ^ inv)
        if x >> 63:
            raise ValueError("base-256 overflow")
        return ~x if inv else x
    return _parse_octal(field)


def _cstr(field):
    cut = field.find(b"\0")
    return field if cut < 0 else field[:cut]


def _byte_sum(blk):
    """sum(blk) of a 512-byte block, fast.

    Adler-32's low half is 1 + sum(bytes) mod 65521, computed in C. A block
    with at least 256 zero bytes sums to at most 256 * 255 < 65521, so the
    residue is the sum itself; otherwise add it up the slow way.
    """
    if blk.count(0) >= 256:
        return ((zlib.adler32(blk) & 0xFFFF) - 1) % 65521
    return sum(blk)


def _header_sum(view, s=0):
    """The unsigned checksum of the header block at ``s`` in ``view``: the
    sum of its bytes, the checksum field counted as eight spaces. Adler-32's
    low half is 1 + sum(bytes) mod 65521; each piece here is at most 256
    bytes, whose sum is below 65521, so it is exact."""
    a = zlib.adler32
    return ((a(view[s:s + 148]) & 0xFFFF) + (a(view[s + 156:s + 412]) & 0xFFFF)
            + (a(view[s + 412:s + 512]) & 0xFFFF) + 253)


def _checksum_ok(blk):
    try:
        want = _parse_octal(blk[148:156])
    except ValueError:
        return False
    unsigned = sum(blk) - sum(blk[148:156]) + 8 * 32
    if want == unsigned:
        return True
    # Some old tars summed signed chars (Go accepts both).
    high = sum(1 for c in blk[:148] + blk[156:] if c & 0x80)
    return want == unsigned - 256 * high


def parse_pax_records(data):
    """PAX extended header data -> dict of str key -> bytes value (Go's parsePAX)."""
    records = {}
    pos = 0
    n = len(data)
    while pos < n:
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise ValueError("PAX record without length")
        length = data[pos:sp]
        if not length.isdigit():
            raise ValueError("PAX record length %r" % length)
        end = pos + int(length)
        if end > n or end <= sp + 1 or data[end - 1:end] != b"\n":
            raise ValueError("PAX record overruns its header")
        rec = data[sp + 1:end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise ValueError("PAX record without key")
        key = rec[:eq].decode("utf-8", "surrogateescape")
        value = rec[eq + 1:]
        if key in ("path", "linkpath", "uname", "gname") and b"\0" in value:
            raise ValueError("NUL in PAX %s" % key)
        records[key] = value
        pos = end
    return records


def parse_pax_time(value):
    """A PAX time ('1500000000.25', '-3.5') -> integer nanoseconds, as Go."""
    s = value.decode("ascii")
    secs, point, frac = s.partition(".")
    neg = secs.startswith("-")
    isecs = int(secs)
    if frac:
        if not frac.isdigit():
            raise ValueError("bad PAX time %r" % s)
        nsec = int((frac + "000000000")[:9])
        return isecs * 10 ** 9 + (-nsec if neg else nsec)
    return isecs * 10 ** 9


class TarReader(object):
    """Iterate over the entries of a tar stream.

    ``stream`` is a readable binary file object. When it is a plain file
    object (``open(path, 'rb')``) on a regular file, the reader reads its
    descriptor at explicit offsets
    (and copies large payloads in the kernel with ``copy_file_range``); the
    file object's position is set past what was consumed when iteration ends
    or :meth:`close` is called.
    """

    def __init__(self, stream, bufsize=1 << 20, observer=None):
        self._f = stream
        # A stream may bring its own (the layer store's hashing tee does).
        self._obs = observer if observer is not None else getattr(
            stream, "tar_observer", None)
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self.offset = 0          # stream offset of self._start
        self._remaining = 0      # payload bytes of the current entry not consumed
        self._padlen = 0         # padding after that payload
        self._entry = None
        self._done = False
        self._fd = None
        self._fpos = 0           # next file offset to read (fd mode)
        self._fbase = 0
        try:
            # Only a plain file object: a wrapper (say, one hashing what is
            # read) must see every byte, so it is always read through.
            if type(stream) not in (io.FileIO, io.BufferedReader) or self._obs is not None:
                raise io.UnsupportedOperation
            fd = stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode) and stream.seekable():
                self._fd = fd
                self._fbase = self._fpos = stream.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None

    # -- low level buffer -------------------------------------------------
    def _readinto(self, view):
        if self._fd is not None:
            n = os.preadv(self._fd, [view], self._fpos)
            self._fpos += n
            return n
        readinto = getattr(self._f, "readinto", None)
        if readinto is not None:
            n = readinto(view)
        else:
            data = self._f.read(len(view))
            n = len(data)
            view[:n] = data
        if n is None:
            raise ArchiveError("tar stream is non-blocking and has no data")
        return n

    def _fill(self, n):
        """Make ``n`` bytes available at ``_start``; return how many are (< n at EOF)."""
        avail = self._end - self._start
        if avail >= n:
            return avail
        if self._start + n > len(self._buf):
            if n > len(self._buf):
                self._buf.extend(bytes(n - len(self._buf)))
                self._view.release()
                self._view = memoryview(self._buf)
            self._buf[:avail] = bytes(self._view[self._start:self._end])
            self._start, self._end = 0, avail
        view = self._view
        while self._end - self._start < n:
            got = self._readinto(view[self._end:])
            if not got:
                break
            self._end += got
        return self._end - self._start

    def _take(self, n, what):
        """Consume and return exactly ``n`` bytes (raise when truncated)."""
        if self._fill(n) < n:
            raise ArchiveError("tar stream truncated at offset %d (%s)" % (
                self.offset + (self._end - self._start), what))
        s = self._start
        self._start = s + n
        self.offset += n
        return bytes(self._view[s:s + n])

    # -- payload ----------------------------------------------------------
    def _finish_payload(self):
        entry = self._entry
        if self._remaining:
            self._skip(self._remaining, entry)
            self._remaining = 0
        if entry is not None and entry.pad is None:
            n = self._padlen
            if not n:
                entry.pad = b""
            elif self._end - self._start >= n:
                s = self._start
                pad = self._buf[s:s + n]
                # Almost always zeros: share one object then.
                entry.pad = _ZERO_PADS[n] if pad == _ZERO_PADS[n] else bytes(pad)
                self._start = s + n
                self.offset += n
            else:
                entry.pad = self._take(n, "padding of %r" % entry.name)
            if n and self._obs is not None:
                self._obs.padding(entry.pad)

    def _skip(self, n, entry):
        obs = self._obs
        avail = self._end - self._start
        if avail >= n:
            if obs is not None:
                obs.payload(self._view[self._start:self._start + n])
            self._start += n
            self.offset += n
            return
        if obs is not None and avail:
            obs.payload(self._view[self._start:self._end])
        self._start = self._end
        self.offset += avail
        n -= avail
        if self._fd is not None:
            size = os.fstat(self._fd).st_size
            if self._fpos + n > size:
                self.offset += size - self._fpos
                self._fpos = size
                raise ArchiveError("tar stream truncated at offset %d (payload of %r)"
                                   % (self.offset, entry.name))
            self._fpos += n
            self.offset += n
            return
        while n:
            got = self._readinto(self._view[:min(n, len(self._buf))])
            if not got:
                raise ArchiveError("tar stream truncated at offset %d (payload of %r)"
                                   % (self.offset, entry.name))
            if obs is not None:
                obs.payload(self._view[:got])
            n -= got
            self.offset += got
        self._start = self._end = 0

    def _payload_chunks(self):
        entry = self._entry
        while self._remaining:
            avail = self._end - self._start
            if not avail:
                self._start = self._end = 0
                avail = self._fill(min(self._remaining, len(self._buf)))
                if not avail:
                    raise ArchiveError("tar stream truncated at offset %d (payload of %r)"
                                       % (self.offset, entry.name))
            k = min(avail, self._remaining)
            s = self._start
            self._start = s + k
            self.offset += k
            self._remaining -= k
            piece = self._view[s:s + k]
            if self._obs is not None:
                self._obs.payload(piece)
            yield piece
        self._finish_payload()

    def _read_payload(self):
        return b"".join(bytes(c) for c in self._payload_chunks())

    def _copy_payload(self, fd):
        entry = self._entry
        total = self._remaining
        s = self._start
        end = s + total
        pad = self._padlen
        if self._end - end >= pad and entry.pad is None:
            # The common case, a small file: it and its padding are in the
            # buffer; one write, and the padding checked in place.
            view = self._view[s:end]
            n = os.write(fd, view)
            if n != total:
                _write_all(fd, view[n:])
            if self._buf.count(0, end, end + pad) == pad:
                entry.pad = _ZERO_PADS[pad]
            else:
                entry.pad = bytes(self._view[end:end + pad])
            if self._obs is not None:
                self._obs.payload(view)
                if pad:
                    self._obs.padding(entry.pad)
            self._start = end + pad
            self.offset += total + pad
            self._remaining = 0
            return total
        avail = min(self._end - self._start, self._remaining)
        if avail:
            piece = self._view[self._start:self._start + avail]
            _write_all(fd, piece)
            if self._obs is not None:
                self._obs.payload(piece)
            self._start += avail
            self.offset += avail
            self._remaining -= avail
        if self._remaining and self._fd is not None and _HAVE_CFR[0]:
            # In-kernel copy from the tar file: no trip through Python.
            while self._remaining:
                try:
                    n = os.copy_file_range(self._fd, fd, self._remaining, self._fpos)
                except OSError as err:
                    if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                         errno.EOPNOTSUPP, errno.EBADF):
                        raise
                    break   # not between these files: copy through the buffer
                if not n:
                    raise ArchiveError("tar stream truncated at offset %d (payload of %r)"
                                       % (self.offset, entry.name))
                self._fpos += n
                self.offset += n
                self._remaining -= n
        for chunk in self._payload_chunks():
            _write_all(fd, chunk)
        self._finish_payload()
        return total

    def _skip_payload(self):
        self._finish_payload()

    # -- the plain-file fast path ----------------------------------------------
    def plain_members(self):
        """Yield the plain members that come next, while they do, without an
        :class:`Entry` each: what lets the applier make the bulk of a layer
        in one loop.

        Plain: one USTAR or GNU header block (no extension headers), a
        regular file (type '0'), a symlink ('2') or a directory ('5'), octal
        numeric fields, a valid checksum, and the payload no larger than
        the buffer. Each is ``(typeflag, name, mode, uid, gid, mtime, size,
        data)`` (``mtime`` in whole seconds), ``typeflag`` the byte value (48, 50, 53), ``data``
        the payload of a file (a memoryview valid until the next member is
        asked for), the link target of a symlink, None for a directory.
        Asking for the next consumes the one before; a consumer that stops
        asking (breaks) leaves the last one unconsumed, for the usual
        iteration to parse in full (and to report what is wrong with it,
        if anything).
        """
        entry = self._entry
        if entry is not None:
            if self._remaining or entry.pad is None:
                self._finish_payload()
            self._entry = None
        if self._done:
            return
        buf = self._buf
        view = self._view
        obs = self._obs
        room = len(buf)
        adler32 = zlib.adler32
        s = self._start
        end = self._end
        while True:
            if end - s < BLOCK:
                if self._fill(BLOCK) < BLOCK:
                    return
                s, end = self._start, self._end
            if buf[s + 156] not in _PLAIN_TYPES:
                return
            (name, f_mode, t_mode, f_uid, t_uid, f_gid, t_gid, f_size, t_size, f_mtime,
             t_mtime, tf, magic) = _UNPACK_PLAIN(buf, s)
            if magic != _USTAR_MAGIC and magic != _GNU_MAGIC:
                return
            # Octal fields ended by NUL or space (0 or 0x20), as every common
            # writer emits them.
            if (t_mode | t_uid | t_gid | t_size | t_mtime) & 0xDF:
                return
            try:
                mode = int(f_mode, 8)
                uid = 0 if f_uid == _ZERO7 else int(f_uid, 8)
                gid = 0 if f_gid == _ZERO7 else int(f_gid, 8)
                size = int(f_size, 8)
                mtime = int(f_mtime, 8)
                want = int(buf[s + 148:s + 154], 8)
            except ValueError:
                return
            if (mode | uid | gid | size | mtime) < 0 or buf[s + 154] != 0:
                return
            if tf == 48:
                data_size = size
                total = BLOCK + size + (-size & (BLOCK - 1))
                if end - s < total:
                    # Read what this member needs (what the usual path would read).
                    if total > room or self._fill(total) < total:
                        return
                    s, end = self._start, self._end
                data = view[s + BLOCK:s + BLOCK + size]
            else:
                data_size = 0   # header-only (Go's isHeaderOnlyType)
                total = BLOCK
                data = bytes(buf[s + 157:s + 257]).partition(b"\0")[0] if tf == 50 else None
            # _header_sum, inline
            if want != ((adler32(view[s:s + 148]) & 0xFFFF) + (adler32(view[s + 156:s + 412]) & 0xFFFF)
                        + (adler32(view[s + 412:s + 512]) & 0xFFFF) + 253):
                return      # let the usual path report it
            name = name.partition(b"\0")[0]
            if magic == _USTAR_MAGIC and buf[s + 345]:
                if buf[s + 508:s + 512] == _STAR_TRAILER:
                    return
                name = bytes(buf[s + 345:s + 500]).partition(b"\0")[0] + b"/" + name
            yield tf, name, mode, uid, gid, mtime, size, data
            # Asked for the next: this one is consumed.
            nxt = s + total
            self._start = nxt
            self.offset += total
            if obs is not None:
                h = s + BLOCK
                obs.member(bytes(view[s:h]), name, size, data_size, chr(tf))
                if data_size:
                    obs.payload(data)
                if nxt - h > data_size:
                    obs.padding(bytes(view[h + data_size:nxt]))
            s = nxt

    # -- headers ----------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        if self._entry is not None:
            if self._remaining or self._entry.pad is None:
                self._finish_payload()
            self._entry = None
        entry = self._next_header()
        if entry is None:
            self._done = True
            if self._obs is not None:
                self._observe_end()
            self._sync_file()
            raise StopIteration
        self._entry = entry
        if self._obs is not None:
            self._obs.member(entry.raw, entry.name, entry.size, entry.data_size,
                             entry.typeflag)
        return entry

    def close(self):
        self._sync_file()

    def _sync_file(self):
        if self._fd is not None:
            # Leave the file object just past what we consumed.
            try:
                self._f.seek(self._fbase + self.offset)
            except (OSError, ValueError):
                pass

    def read_trailer(self):
        """After the last entry: the end-of-archive blocks and all bytes after, raw.
        (With an observer they went to it: then only the blocks.)"""
        if not self._done:
            raise ArchiveError("read_trailer() before the end of the archive")
        parts = [self._end_raw]
        parts.extend(bytes(piece) for piece in self._trailing())
        self._sync_file()
        return b"".join(parts)

    def _trailing(self):
        """The bytes after the end-of-archive blocks, to EOF, as memoryviews."""
        if self._end > self._start:
            piece = self._view[self._start:self._end]
            self.offset += self._end - self._start
            self._start = self._end = 0
            yield piece
        self._start = self._end = 0
        while True:
            got = self._readinto(self._view)
            if not got:
                break
            self.offset += got
            yield self._view[:got]

    def _observe_end(self):
        obs = self._obs
        obs.end(self._end_raw)
        for piece in self._trailing():
            obs.trailing(piece)

    _end_raw = b""

    def _next_header(self):
        start_offset = self.offset
        raw = []
        pax = None
        longname = longlink = None
        while True:
            if self._end - self._start < BLOCK:
                have = self._fill(BLOCK)
                if have == 0:
                    return None     # EOF on a block boundary: Go ends the archive here
                if have < BLOCK:
                    raise ArchiveError("tar stream truncated at offset %d (header)" % (
                        self.offset + have))
            s = self._start
            blk = self._buf[s:s + BLOCK]
            if blk == _ZERO_BLOCK:
                blk = bytes(blk)
                self._start += BLOCK
                self.offset += BLOCK
                end = [blk]
                have = self._fill(BLOCK)
                if have >= BLOCK:
                    nxt = bytes(self._view[self._start:self._start + BLOCK])
                    if nxt != _ZERO_BLOCK:
                        raise ArchiveError("tar: zero block then data at offset %d"
                                           % self.offset)
                    self._start += BLOCK
                    self.offset += BLOCK
                    end.append(nxt)
                elif have:
                    raise ArchiveError("tar stream truncated at offset %d (end of archive)"
                                       % (self.offset + have))
                if raw:
                    raise ArchiveError("tar: extension header at offset %d without an entry"
                                       % start_offset)
                self._end_raw = b"".join(end)
                return None
            blk = bytes(blk)
            try:
                ok = (blk[154] == 0 and
                      int(blk[148:154], 8) == _header_sum(blk))
            except ValueError:
                ok = False
            if not ok and not _checksum_ok(blk):    # other layouts, signed sums
                raise ArchiveError("tar: bad header checksum at offset %d" % self.offset,
                                   _cstr(blk[0:100]))
            self._start += BLOCK
            self.offset += BLOCK
            raw.append(blk)
            tf = chr(blk[156])
            if tf in (XHEADER, GNU_LONGNAME, GNU_LONGLINK):
                size = self._num(blk, 124, 136)
                if size < 0 or size > MAX_SPECIAL:
                    raise ArchiveError("tar: special header of %d bytes at offset %d"
                                       % (size, self.offset - BLOCK), _cstr(blk[0:100]))
                padded = (size + BLOCK - 1) & ~(BLOCK - 1)
                data = self._take(padded, "extension header")
                raw.append(data)
                data = data[:size]
                if tf == XHEADER:
                    try:
                        pax = parse_pax_records(data)
                    except ValueError as e:
                        raise ArchiveError("tar: bad PAX header at offset %d: %s"
                                           % (start_offset, e), _cstr(blk[0:100]))
                elif tf == GNU_LONGNAME:
                    longname = _cstr(data)
                else:
                    longlink = _cstr(data)
                continue
            return self._make_entry(blk, tf, raw, start_offset, pax, longname, longlink)

    def _num(self, blk, a, b):
        try:
            return _parse_numeric(blk[a:b])
        except ValueError as e:
            raise ArchiveError("tar: bad numeric field at offset %d: %s"
                               % (self.offset - BLOCK, e), _cstr(blk[0:100]))

    def _make_entry(self, blk, tf, raw, start_offset, pax, longname, longlink):
        (name, f_mode, t_mode, f_uid, t_uid, f_gid, t_gid, f_size, t_size, f_mtime,
         t_mtime, linkname, magic, uname, gname, prefix) = _UNPACK(blk)
        e = Entry()
        name = name.partition(b"\0")[0]
        linkname = linkname.partition(b"\0")[0]
        if magic == _USTAR_MAGIC:
            if blk[508:512] == _STAR_TRAILER:
                prefix = blk[345:476]
            prefix = prefix.partition(b"\0")[0]
            if prefix:
                name = prefix + b"/" + name
            ext = True
        else:
            ext = magic == _GNU_MAGIC
        try:
            # Fast path: octal fields ended by NUL or space, as every
            # common writer emits them; anything else takes the slow path.
            if not (t_mode in _TERMB and t_uid in _TERMB and t_gid in _TERMB
                    and t_size in _TERMB and t_mtime in _TERMB):
                raise ValueError
            mode = int(f_mode, 8)
            uid = int(f_uid, 8)
            gid = int(f_gid, 8)
            size = int(f_size, 8)
            mtime = int(f_mtime, 8)
            if mode < 0 or uid < 0 or gid < 0 or size < 0 or mtime < 0:
                raise ValueError
        except ValueError:
            num = self._num
            mode = num(blk, 100, 108)
            uid = num(blk, 108, 116)
            gid = num(blk, 116, 124)
            size = num(blk, 124, 136)
            mtime = num(blk, 136, 148)
        if ext:
            uname = uname.partition(b"\0")[0]
            gname = gname.partition(b"\0")[0]
            if tf == CHAR or tf == BLOCKDEV:
                e.devmajor = self._num(blk, 329, 337)
                e.devminor = self._num(blk, 337, 345)
            else:
                e.devmajor = e.devminor = 0
        else:
            uname = gname = b""
            e.devmajor = e.devminor = 0
        mtime_ns = mtime * 1000000000
        atime_ns = None
        xattrs = _NO_XATTRS
        if pax:
            xattrs = {}
            try:
                for k, v in pax.items():
                    if not v:
                        continue    # Go: an empty value keeps the USTAR field
                    if k == "path":
                        name = v
                    elif k == "linkpath":
                        linkname = v
                    elif k == "size":
                        size = int(v)
                    elif k == "uid":
                        uid = int(v)
                    elif k == "gid":
                        gid = int(v)
                    elif k == "mtime":
                        mtime_ns = parse_pax_time(v)
                        mtime = mtime_ns // 1000000000
                    elif k == "atime":
                        atime_ns = parse_pax_time(v)
                    elif k == "uname":
                        uname = v
                    elif k == "gname":
                        gname = v
                    elif k.startswith("SCHILY.xattr."):
                        xattrs[k[13:]] = v
                    elif k.startswith("GNU.sparse."):
                        raise ArchiveError("tar: GNU sparse files are not supported",
                                           name)
            except ValueError as err:
                raise ArchiveError("tar: bad PAX record at offset %d: %s"
                                   % (start_offset, err), name)
        else:
            pax = _NO_PAX
        if longname is not None:
            name = longname
        if longlink is not None:
            linkname = longlink
        if tf == REGA:
            tf = DIR if name.endswith(b"/") else REG
        elif tf == GNU_SPARSE:
            raise ArchiveError("tar: GNU sparse files are not supported", name)
        if size < 0:
            raise ArchiveError("tar: negative size", name)
        e.name = name
        e.mode = mode
        e.uid = uid
        e.gid = gid
        e.linkname = linkname
        e.uname = uname
        e.gname = gname
        e.typeflag = tf
        e.size = size
        e.mtime = mtime
        e.mtime_ns = mtime_ns
        e.atime_ns = atime_ns
        e.pax = pax
        e.xattrs = xattrs
        e.raw = raw[0] if len(raw) == 1 else b"".join(raw)
        e.offset = start_offset
        data = 0 if tf in HEADER_ONLY else size
        e.data_size = data
        e.pad = None
        e._reader = self
        self._remaining = data
        self._padlen = -data & (BLOCK - 1)
        return e


def iter_entries(stream):
    """Iterate over the entries of a tar stream (see :class:`TarReader`)."""
    return iter(TarReader(stream))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- writer ---------------------------------------------------------------

_HDR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")


_O7 = 1 << 21       # largest octal field value + 1 in 8 bytes (7 digits)
_O11 = 1 << 33      # ... in 12 bytes (11 digits)


def _octal(width, value):
    """Go's formatOctal: width-1 zero-padded digits then NUL; None if it won't fit."""
    if value < 0 or value >= 1 << (3 * (width - 1)):
        return None
    return b"%0*o\0" % (width - 1, value)


def _ascii(s):
    return s.isascii() and b"\0" not in s


def _split_ustar(name):
    """Go's splitUSTARPath: (prefix, suffix) or None."""
    length = len(name)
    if length <= 100 or not _ascii(name):
        return None
    if length > 156:
        length = 156
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    nlen = len(name) - i - 1
    if i <= 0 or nlen > 100 or nlen == 0 or i > 155:
        return None
    return name[:i], name[i + 1:]


def _finish(fields):
    blk = bytearray(_HDR.pack(*fields))
    blk[148:156] = b"        "
    blk[148:156] = b"%06o\0 " % _byte_sum(blk)
    return bytes(blk)


def _pax_record(key, value):
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _clean(path):
    """Go's path.Clean for relative names without '..' (enough for PaxHeaders)."""
    parts = [p for p in path.split(b"/") if p and p != b"."]
    return b"/".join(parts) or b"."


def encode_header(name, mode, uid, gid, size, mtime, typeflag, linkname=b"",
                  devmajor=0, devminor=0, xattrs=None, uname=b"", gname=b"",
                  pax_only=False):
    """The header block(s) of one entry as Go's tar writer emits them.

    ``name``/``linkname``/``uname``/``gname`` are bytes, ``mtime`` whole
    seconds, ``typeflag`` a one-character string, ``xattrs`` a dict of
    str -> bytes written as ``SCHILY.xattr.*`` records. With ``pax_only``
    (Docker's ``Format = FormatPAX`` *and* a record it needs) PAX is forced.
    """
    tfb = typeflag.encode("latin-1")
    if (not xattrs and not pax_only and len(name) <= 100 and len(linkname) <= 100
            and len(uname) <= 32 and len(gname) <= 32
            and 0 <= mode < _O7 and 0 <= uid < _O7 and 0 <= gid < _O7
            and 0 <= size < _O11 and 0 <= mtime < _O11
            and 0 <= devmajor < _O7 and 0 <= devminor < _O7
            and _ascii(name) and _ascii(linkname) and _ascii(uname) and _ascii(gname)):
        # Everything fits a plain USTAR header (the usual case).
        return _finish((name, b"%07o\0" % mode, b"%07o\0" % uid, b"%07o\0" % gid,
                        b"%011o\0" % size, b"%011o\0" % mtime, b"", tfb, linkname,
                        b"ustar\0", b"00", uname, gname, b"%07o\0" % devmajor,
                        b"%07o\0" % devminor, b""))
    if b"\0" in name or b"\0" in linkname:
        raise ArchiveError("tar: NUL in a name", name)
    pax = {}
    ustar_ok = not pax_only
    prefix = b""
    uname_name = name
    if len(name) > 100 or not _ascii(name):
        pax[b"path"] = name
        split = _split_ustar(name)
        if split is None:
            ustar_ok = False
        else:
            prefix, uname_name = split
    if len(linkname) > 100 or not _ascii(linkname):
        pax[b"linkpath"] = linkname
        ustar_ok = False
    for key, val, width in ((b"uname", uname, 32), (b"gname", gname, 32)):
        if len(val) > width or not _ascii(val):
            pax[key] = val
            ustar_ok = False
    f_mode = _octal(8, mode)
    if f_mode is None:
        raise ArchiveError("tar: mode %o does not fit" % mode, name)
    f_uid = _octal(8, uid)
    if f_uid is None:
        pax[b"uid"] = b"%d" % uid
        ustar_ok = False
    f_gid = _octal(8, gid)
    if f_gid is None:
        pax[b"gid"] = b"%d" % gid
        ustar_ok = False
    f_size = _octal(12, size)
    if f_size is None:
        pax[b"size"] = b"%d" % size
        ustar_ok = False
    f_mtime = _octal(12, mtime)
    if f_mtime is None:
        pax[b"mtime"] = b"%d" % mtime
        ustar_ok = False
    f_major = _octal(8, devmajor)
    f_minor = _octal(8, devminor)
    if f_major is None or f_minor is None:
        raise ArchiveError("tar: device number does not fit", name)
    if xattrs:
        for k, v in xattrs.items():
            pax[b"SCHILY.xattr." + k.encode("utf-8", "surrogateescape")] = v
        ustar_ok = False
    zero8 = b"0000000\0"
    if ustar_ok:
        return _finish((uname_name, f_mode, f_uid, f_gid, f_size, f_mtime, b"", tfb,
                        linkname, b"ustar\0", b"00", uname, gname, f_major, f_minor,
                        prefix))
    # The PAX extended header, then a main header holding what fits (Go
    # writes ASCII-only strings truncated to the field, and 0 for numbers
    # that do not fit).
    data = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
    d, sep, base = name.rpartition(b"/") if not name.endswith(b"/") else (name, b"", b"")
    xname = _clean(b"/".join(p for p in (d, b"PaxHeaders.0", base) if p))
    xname = bytes(c for c in xname if c < 0x80)[:100].rstrip(b"/")
    xhdr = _finish((xname, zero8, zero8, zero8, _octal(12, len(data)),
                    b"00000000000\0", b"", b"x", b"", b"ustar\0", b"00", b"", b"",
                    b"", b"", b""))
    pad = -len(data) & (BLOCK - 1)

    def asc(s, width):
        return bytes(c for c in s if c < 0x80)[:width]

    main = _finish((asc(name, 100), f_mode, f_uid or zero8, f_gid or zero8,
                    f_size or b"00000000000\0", f_mtime or b"00000000000\0", b"",
                    tfb, asc(linkname, 100), b"ustar\0", b"00", asc(uname, 32),
                    asc(gname, 32), f_major, f_minor, b""))
    return xhdr + data + b"\0" * pad + main


def padding(size):
    """The zero bytes that follow a payload of ``size`` bytes."""
    return b"\0" * (-size & (BLOCK - 1))
