"""tarstream: headers as Go's archive/tar writes and reads them."""

import io
import os
import subprocess
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import tarstream
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import (
    ArchiveError)
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.tarstream import (
    encode_header, iter_entries, TarReader, END_OF_ARCHIVE)


def _tar(*members):
    """members: (header bytes, payload bytes)."""
    out = []
    for hdr, data in members:
        out.append(hdr)
        out.append(data)
        out.append(tarstream.padding(len(data)))
    out.append(END_OF_ARCHIVE)
    return b"".join(out)


def _python_members(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def test_short_entry_is_plain_ustar():
    hdr = encode_header(b"etc/hostname", 0o100644, 0, 0, 5, 1500000000, "0")
    assert len(hdr) == 512
    assert hdr[257:265] == b"ustar\x0000"
    assert hdr[100:108] == b"0100644\0"           # Go's formatOctal, type bits kept
    assert hdr[124:136] == b"00000000005\0"
    assert hdr[148:156].endswith(b"\0 ")            # checksum: 6 digits, NUL, space
    assert hdr[265:297] == b"\0" * 32                 # no uname: Docker does no lookups
    assert hdr[329:337] == b"0000000\0"             # devmajor always formatted
    (m,) = _python_members(_tar((hdr, b"hello")))
    assert (m.name, m.size, m.mtime, m.mode & 0o7777) == ("etc/hostname", 5, 1500000000, 0o644)


def test_long_ascii_name_splits_into_prefix():
    name = b"a" * 60 + b"/" + b"b" * 60
    hdr = encode_header(name, 0o644, 0, 0, 0, 0, "0")
    assert len(hdr) == 512                           # still USTAR
    assert hdr[345:406] == b"a" * 60 + b"\0"
    (m,) = _python_members(_tar((hdr, b"")))
    assert m.name == name.decode()


def test_unsplittable_name_gets_pax_path_record():
    name = b"d/" + b"x" * 200
    hdrs = encode_header(name, 0o644, 0, 0, 3, 7, "0")
    assert hdrs[156:157] == b"x"
    assert hdrs[0:100].rstrip(b"\0") == b"d/PaxHeaders.0/" + b"x" * 85
    assert b" path=d/" + b"x" * 200 + b"\n" in hdrs
    (m,) = _python_members(_tar((hdrs, b"abc")))
    assert m.name == name.decode() and m.size == 3


def test_directory_pax_header_name_as_go_writes_it():
    # path.Join(dir, "PaxHeaders.0", base), then ASCII only, at most 100 bytes.
    hdrs = encode_header("caf\u00e9/".encode(), 0o40755, 0, 0, 0, 7, "5")
    assert hdrs[0:100].rstrip(b"\0") == b"caf/PaxHeaders.0"
    long_dir = encode_header(b"d" * 120 + b"/", 0o40755, 0, 0, 0, 7, "5")
    assert long_dir[0:100] == b"d" * 100


def test_non_ascii_name_and_big_ids_use_pax():
    name = "caf\u00e9".encode()
    hdrs = encode_header(name, 0o644, 3000000, 7, 0, 0, "0")
    assert b" path=caf\xc3\xa9\n" in hdrs and b" uid=3000000\n" in hdrs
    (m,) = _python_members(_tar((hdrs, b"")))
    assert m.name == "caf\u00e9" and m.uid == 3000000 and m.gid == 7


def test_pax_records_sorted_and_xattr_as_schily():
    hdrs = encode_header("\u00e9".encode(), 0o644, 0, 0, 0, 0, "0",
                         xattrs={"security.capability": b"\x01\x00"})
    data = hdrs[512:1024]
    # Length counts itself; keys sorted ("SCHILY..." < "path").
    assert data.startswith(b"39 SCHILY.xattr.security.capability=\x01\x00\n"
                           b"11 path=\xc3\xa9\n\0")
    for e in iter_entries(io.BytesIO(_tar((hdrs, b"")))):
        assert e.xattrs == {"security.capability": b"\x01\x00"}


def test_negative_mtime_is_a_pax_record():
    hdrs = encode_header(b"old", 0o644, 0, 0, 0, -5, "0")
    assert b" mtime=-5\n" in hdrs
    (e,) = list(iter_entries(io.BytesIO(_tar((hdrs, b"")))))
    assert e.mtime == -5


def test_reads_gnu_tar_long_names_links_and_specials(tmp_path):
    src = tmp_path / "src"
    deep = src / ("n" * 90) / ("m" * 90)
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"x" * 1000)
    os.symlink("t" * 150, str(src / "longlink"))
    os.link(str(deep / "file"), str(src / "hard"))
    os.mkfifo(str(src / "fifo"))
    archive = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(archive), "-C", str(src), "."],
                   check=True)
    got = {}
    with open(str(archive), "rb") as f:
        for e in iter_entries(f):
            got[e.name] = e
            if e.isreg():
                assert e.read() == b"x" * 1000
    assert got[b"./longlink"].linkname == b"t" * 150
    assert got[b"./longlink"].typeflag == "2"
    assert got[b"./fifo"].typeflag == "6"
    long_file = b"./" + b"n" * 90 + b"/" + b"m" * 90 + b"/file"
    assert long_file in got
    links = [e for e in got.values() if e.typeflag == "1"]
    assert len(links) == 1 and links[0].size == 0


def test_base256_numbers():
    ti = tarfile.TarInfo("big")
    ti.uid = 1 << 40                      # only fits base-256 (GNU format)
    ti.mtime = 1 << 40
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(ti, io.BytesIO(b""))
    (e,) = list(iter_entries(io.BytesIO(data.getvalue())))
    assert e.uid == 1 << 40 and e.mtime == 1 << 40
    assert tarstream._parse_numeric(b"\xff" * 8) == -1


def test_raw_segments_rebuild_the_stream_byte_for_byte(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, size in enumerate((0, 1, 511, 512, 513, 70000)):
            ti = tarfile.TarInfo("f%d-" % i + "\u00e9" * (i * 30))
            ti.size = size
            ti.pax_headers = {"SCHILY.xattr.user.k": "v%d" % i}
            tf.addfile(ti, io.BytesIO(os.urandom(size)))
        ti = tarfile.TarInfo("dir")
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    original = data.getvalue() + b"trailing garbage"
    for stream in (io.BytesIO(original), _pipe_reader(original)):
        reader = TarReader(stream, bufsize=4096)
        parts = []
        for e in reader:
            parts.append(e.raw)
            if e.name.startswith(b"f5"):
                parts.extend(bytes(c) for c in e.chunks())
            else:
                parts.append(e.read())
            parts.append(e.pad)
        parts.append(reader.read_trailer())
        assert b"".join(parts) == original


def _pipe_reader(data):
    r, w = os.pipe()
    import threading

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)
    threading.Thread(target=feed, daemon=True).start()
    return os.fdopen(r, "rb", buffering=0)


def test_payload_copy_from_a_file_uses_offsets(tmp_path):
    payload = os.urandom(3 << 20)
    path = tmp_path / "t.tar"
    path.write_bytes(_tar((encode_header(b"a", 0o644, 0, 0, len(payload), 0, "0"), payload),
                          (encode_header(b"b", 0o644, 0, 0, 2, 0, "0"), b"ok")))
    out = tmp_path / "out"
    with open(str(path), "rb") as f, open(str(out), "wb") as o:
        names = []
        for e in iter_entries(f):
            names.append(e.name)
            if e.name == b"a":
                assert e.copy_to_fd(o.fileno()) == len(payload)
            else:
                assert e.read() == b"ok"
    assert names == [b"a", b"b"]
    assert out.read_bytes() == payload


def test_truncated_payload_names_offset():
    data = _tar((encode_header(b"f", 0o644, 0, 0, 2000, 0, "0"), b"y" * 2000))[:1200]
    with pytest.raises(ArchiveError, match="truncated at offset"):
        for e in iter_entries(io.BytesIO(data)):
            e.read()


def test_truncated_header():
    data = _tar((encode_header(b"f", 0o644, 0, 0, 0, 0, "0"), b""))[:300]
    with pytest.raises(ArchiveError, match="truncated"):
        list(iter_entries(io.BytesIO(data)))


def test_bad_checksum_names_the_entry():
    hdr = bytearray(encode_header(b"victim", 0o644, 0, 0, 0, 0, "0"))
    hdr[0] ^= 0x20
    with pytest.raises(ArchiveError, match="checksum.*Victim"):
        list(iter_entries(io.BytesIO(bytes(hdr) + END_OF_ARCHIVE)))


def test_malformed_numeric_field():
    hdr = bytearray(encode_header(b"bad", 0o644, 0, 0, 0, 0, "0"))
    hdr[124:136] = b"zzzzzzzzzzz\0"
    hdr[148:156] = b"        "
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    with pytest.raises(ArchiveError, match="numeric.*bad"):
        list(iter_entries(io.BytesIO(bytes(hdr) + END_OF_ARCHIVE)))


def test_end_without_trailer_and_zero_block_then_data():
    one = encode_header(b"f", 0o644, 0, 0, 0, 0, "0")
    assert [e.name for e in iter_entries(io.BytesIO(one))] == [b"f"]
    with pytest.raises(ArchiveError, match="zero block"):
        list(iter_entries(io.BytesIO(b"\0" * 512 + one)))


def test_header_only_types_have_no_payload():
    # A directory claiming 1024 bytes: Go reads no payload for it.
    d = encode_header(b"d/", 0o755, 0, 0, 1024, 0, "5")
    f = encode_header(b"d/f", 0o644, 0, 0, 0, 0, "0")
    entries = list(iter_entries(io.BytesIO(d + f + END_OF_ARCHIVE)))
    assert [(e.name, e.size, e.data_size) for e in entries] == [
        (b"d/", 1024, 0), (b"d/f", 0, 0)]


def test_pax_then_gnu_longname_and_global_header():
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        ti = tarfile.TarInfo("x")
        ti.pax_headers = {"mtime": "1.5", "atime": "2.25"}
        tf.addfile(ti)
    entries = list(iter_entries(io.BytesIO(data.getvalue())))
    assert entries[0].typeflag == "g"
    assert entries[1].mtime_ns == 1500000000 and entries[1].atime_ns == 2250000000


def test_wrapped_file_streams_are_read_through(tmp_path):
    # A wrapper that hashes what it reads must see every byte (no fd bypass).
    import hashlib
    payload = os.urandom(2 << 20)
    data = _tar((encode_header(b"a", 0o644, 0, 0, len(payload), 0, "0"), payload))
    path = tmp_path / "t.tar"
    path.write_bytes(data)

    class Hashing(io.RawIOBase):
        def __init__(self, f):
            self.f, self.h = f, hashlib.sha256()

        def readable(self):
            return True

        def fileno(self):
            return self.f.fileno()

        def readinto(self, b):
            n = self.f.readinto(b)
            self.h.update(memoryview(b)[:n])
            return n

    with open(str(path), "rb") as f:
        w = Hashing(f)
        reader = TarReader(w)
        for e in reader:
            e.copy_to_fd(os.open(os.devnull, os.O_WRONLY))
        reader.read_trailer()
    assert w.h.hexdigest() == hashlib.sha256(data).hexdigest()
