"""tar-split: CRC-64/ISO values, the JSON records, byte-identical round trips."""

import base64
import gzip
import io
import json
import os
import random
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import crc64, tarsplit
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import (
    ArchiveError)

# Go's hash/crc64 crc64_test.go golden values for crc64.ISO
GO_GOLDEN_ISO = [
    (0x0000000000000000, b""),
    (0x3420000000000000, b"a"),
    (0x36c4200000000000, b"ab"),
    (0x3776c42000000000, b"abc"),
    (0x336776c420000000, b"abcd"),
    (0x32d36776c4200000, b"abcde"),
    (0x3002d36776c42000, b"abcdef"),
    (0x31b002d36776c420, b"abcdefg"),
    (0x0e21b002d36776c4, b"abcdefgh"),
]


def bitwise_crc64_iso(data):
    """Reference: the reflected CRC one bit at a time, no tables, no folding."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _i in range(8):
            crc = (crc >> 1) ^ 0xD800000000000000 if crc & 1 else crc >> 1
    return crc ^ ((1 << 64) - 1)


@pytest.mark.parametrize("want,data", GO_GOLDEN_ISO)
def test_crc64_go_golden(want, data):
    assert crc64.checksum(data) == want


def test_crc64_matches_bitwise_reference_and_streams():
    rnd = random.Random(42)
    for n in (1, 7, 8, 9, 31, 32, 33, 64, 65, 127, 128, 129, 511, 4096, 70001):
        data = bytes(rnd.getrandbits(8) for _i in range(n))
        want = bitwise_crc64_iso(data)
        assert crc64.checksum(data) == want, n
        c = crc64.CRC64()
        cut = rnd.randrange(n + 1)
        c.update(data[:cut])
        c.update(data[cut:])
        assert c.value == want
        assert c.digest() == want.to_bytes(8, "big")


def _tar(entries, fmt=tarfile.PAX_FORMAT, tail=b""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            name, kind = e[0], e[1]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1600000000
            ti.type = kind
            data = None
            if kind == tarfile.REGTYPE:
                data = e[2]
                ti.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = e[2]
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue() + tail


class _Trickle(io.RawIOBase):
    """A stream that hands out at most ``chunk`` bytes a read, as a pipe may."""

    def __init__(self, data, chunk):
        self._data, self._pos, self._chunk = data, 0, chunk

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self._chunk, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def _split(data, chunk, engine_version=None):
    out = io.BytesIO()
    tarsplit.disassemble(_Trickle(data, chunk), out, engine_version=engine_version)
    return out.getvalue()


def _records(js):
    return [json.loads(line) for line in js.decode().splitlines()]


def test_records_of_a_one_file_tar():
    data = _tar([("a", tarfile.REGTYPE, b"hi")], fmt=tarfile.USTAR_FORMAT)
    recs = _records(_split(data, 4096, engine_version="20.10"))
    # header segment, the file, padding + end blocks, tarfile's record
    # padding after them, the empty read at EOF (tar-split v0.11.1)
    assert [r["type"] for r in recs] == [2, 1, 2, 2, 2]
    assert [r["position"] for r in recs] == [0, 1, 2, 3, 4]
    assert base64.b64decode(recs[0]["payload"]) == data[:512]
    assert recs[1] == {"type": 1, "name": "a", "size": 2, "position": 1,
                       "payload": base64.b64encode(
                           bitwise_crc64_iso(b"hi").to_bytes(8, "big")).decode()}
    assert base64.b64decode(recs[2]["payload"]) == data[514:2048]
    assert base64.b64decode(recs[3]["payload"]) == data[2048:] == bytes(10240 - 2048)
    assert recs[4]["payload"] == ""
    # Go's encoder field order and spelling, one object a line
    line = _split(data, 4096).splitlines()[1].decode()
    assert line.startswith('{"type":1,"name":"a","size":2,"payload":"')
    assert line.endswith('","position":1}')


@pytest.mark.parametrize("version,eof_segment", [
    ("20.10.24+dfsg1", True), ("24.0.7", True), ("25.0", False), ("26.1.5+dfsg1", False),
    (None, False)])
def test_the_empty_eof_segment_is_20_10s_only(version, eof_segment):
    """tar-split v0.11.4 ("don't add a padding entry if it has no bytes"),
    vendored from Engine 25 on, ends a file with the last bytes read; both
    reassemble to the same tar."""
    data = _tar([("a", tarfile.REGTYPE, b"hi")], fmt=tarfile.USTAR_FORMAT)
    recs = _records(_split(data, 4096, engine_version=version))
    assert tarsplit.writes_eof_segment(version) is eof_segment
    if eof_segment:
        assert len(recs) == 5 and recs[-1] == {"type": 2, "payload": "", "position": 4}
    else:
        # the last: the padding tarfile wrote after the end blocks
        assert len(recs) == 4 and base64.b64decode(recs[-1]["payload"]) == bytes(10240 - 2048)
    # no end-of-archive blocks at all: the same rule
    cut = _records(_split(data[:1024], 300, engine_version=version))
    assert (cut[-1]["payload"] == "") is eof_segment


def test_empty_and_dir_entries_have_null_payload_and_no_size():
    data = _tar([("d/", tarfile.DIRTYPE), ("d/e", tarfile.REGTYPE, b"")])
    lines = [l for l in _split(data, 512).decode().splitlines() if '"type":1' in l]
    assert lines == ['{"type":1,"name":"d/","payload":null,"position":1}',
                     '{"type":1,"name":"d/e","payload":null,"position":3}']


def test_go_json_escaping_of_names():
    data = _tar([("a<b>&c\u2028", tarfile.REGTYPE, b"x")])
    text = _split(data, 512).decode()
    assert '"name":"a\\u003cb\\u003e\\u0026c\\u2028"' in text


def test_non_utf8_name_goes_to_name_raw():
    name = b"caf\xe9"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as t:
        ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"z"))
    recs = _records(_split(buf.getvalue(), 100))
    files = [r for r in recs if r["type"] == 1]
    assert "name" not in files[0]
    assert base64.b64decode(files[0]["name_raw"]) == name
    entries = list(tarsplit.iter_entries(io.BytesIO(_split(buf.getvalue(), 100))))
    assert [e.name for e in entries if e.type == 1] == [name]


def _roundtrip(data, tmp_path, chunk):
    js = _split(data, chunk)
    root = tmp_path / ("root-%d" % chunk)
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        t.extractall(str(root))
    out = io.BytesIO()
    n = tarsplit.assemble(tarsplit.iter_entries(io.BytesIO(js)), str(root), out)
    assert n == len(data)
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [511, 512, 4096, 1 << 20])
def test_round_trip_is_byte_identical(tmp_path, fmt, chunk):
    long = "dir/" + "n" * 120 if fmt != tarfile.USTAR_FORMAT else "dir/" + "n" * 90
    rnd = random.Random(7)
    big = bytes(rnd.getrandbits(8) for _i in range(70000))
    entries = [
        ("dir/", tarfile.DIRTYPE),
        ("dir/small", tarfile.REGTYPE, b"hello\n"),
        ("dir/empty", tarfile.REGTYPE, b""),
        ("dir/exact", tarfile.REGTYPE, b"e" * 512),
        (long, tarfile.REGTYPE, big),
        ("dir/link", tarfile.SYMTYPE, "small"),
        ("dir/hard", tarfile.LNKTYPE, "dir/small"),
    ]
    if fmt == tarfile.PAX_FORMAT:
        entries.append(("dir/ünïcode", tarfile.REGTYPE, b"u"))
    data = _tar(entries, fmt=fmt, tail=bytes(5000))
    assert _roundtrip(data, tmp_path, chunk) == data


def test_round_trip_fed_byte_by_byte(tmp_path):
    data = _tar([("d/", tarfile.DIRTYPE), ("d/" + "x" * 150, tarfile.REGTYPE, b"abc" * 300),
                 ("d/l", tarfile.SYMTYPE, "y" * 200)])
    assert _roundtrip(data, tmp_path, 1) == data


def test_stream_without_end_blocks_round_trips(tmp_path):
    data = _tar([("f", tarfile.REGTYPE, b"abc")])
    cut = data[:1024]  # header + one data block, no end-of-archive blocks
    assert _roundtrip(cut, tmp_path, 300) == cut


def test_changed_file_is_named(tmp_path):
    data = _tar([("a", tarfile.REGTYPE, b"one"), ("b", tarfile.REGTYPE, b"two")])
    js = _split(data, 512)
    root = tmp_path / "r"
    root.mkdir()
    (root / "a").write_bytes(b"one")
    (root / "b").write_bytes(b"twO")
    with pytest.raises(tarsplit.TarSplitError) as e:
        tarsplit.assemble(tarsplit.iter_entries(io.BytesIO(js)), str(root), io.BytesIO())
    assert e.value.entry == "b"
    (root / "b").write_bytes(b"two!")
    with pytest.raises(tarsplit.TarSplitError, match="longer") as e:
        tarsplit.assemble(tarsplit.iter_entries(io.BytesIO(js)), str(root), io.BytesIO())
    assert e.value.entry == "b"
    os.unlink(str(root / "b"))
    with pytest.raises(tarsplit.TarSplitError) as e:
        tarsplit.assemble(tarsplit.iter_entries(io.BytesIO(js)), str(root), io.BytesIO())
    assert e.value.entry == "b"


def test_duplicate_paths_are_refused_like_tar_split():
    data = _tar([("a", tarfile.REGTYPE, b"1"), ("./a", tarfile.REGTYPE, b"2")])
    with pytest.raises(ArchiveError, match="duplicates"):
        _split(data, 512)


def test_truncated_and_corrupt_streams_fail():
    data = _tar([("a", tarfile.REGTYPE, b"x" * 1000)])
    with pytest.raises(ArchiveError, match="truncated"):
        _split(data[:700], 512)
    with pytest.raises(ArchiveError, match="truncated"):
        _split(data[:100], 512)
    bad = bytearray(data)
    bad[0] ^= 0xFF  # the header checksum no longer matches
    with pytest.raises(ArchiveError, match="checksum"):
        _split(bytes(bad), 512)


def test_gzip_file_round_trip(tmp_path):
    data = _tar([("a", tarfile.REGTYPE, b"payload")])
    path = str(tmp_path / "tar-split.json.gz")
    w = tarsplit.open_writer(path)
    tarsplit.disassemble(io.BytesIO(data), w)
    w.close()
    with open(path, "rb") as f:
        head = f.read(10)
    # gzip header as Go writes it: no name, mtime 0, OS unknown
    assert head[:4] == b"\x1f\x8b\x08\x00" and head[4:8] == b"\0\0\0\0" and head[9] == 255
    root = tmp_path / "r"
    root.mkdir()
    (root / "a").write_bytes(b"payload")
    out = io.BytesIO()
    tarsplit.assemble(tarsplit.read_entries(path), str(root), out)
    assert out.getvalue() == data


def _with_global_header(records):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=records) as t:
        ti = tarfile.TarInfo("f")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_global_header_is_an_entry_and_round_trips(tmp_path):
    """Go returns a 'g' header as an entry of size 0 named by its path record;
    tar-split keeps its data in the segment before that record."""
    files = [r for r in _records(_split(_with_global_header({"path": "glob"}), 700))
             if r["type"] == 1]
    assert files[0] == {"type": 1, "name": "glob", "payload": None, "position": 1}
    assert files[1]["name"] == "f"
    # (Python's tarfile would apply a global path to "f": none for the round trip)
    data = _with_global_header({"comment": "x" * 600})
    recs = _records(_split(data, 700))
    size = int(data[124:135], 8)    # the 'g' data, without its padding
    assert base64.b64decode(recs[0]["payload"]) == data[:512 + size]
    assert _roundtrip(data, tmp_path, 700) == data


def _observed(tmp_path, data, offload, name):
    from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
        tarsplit_worker, tarstream)
    path = str(tmp_path / name)
    dis = tarsplit_worker.open_disassembler(path, "20.10", offload=offload)
    try:
        for entry in tarstream.TarReader(io.BytesIO(data), observer=dis):
            if entry.isreg():
                entry.read()
    except BaseException:
        dis.abort()
        raise
    dis.close()
    with open(path, "rb") as f:
        return gzip.decompress(f.read())


@pytest.mark.parametrize("offload", [False, True])
def test_worker_writes_what_the_disassembler_writes(tmp_path, offload):
    rnd = random.Random(3)
    entries = [("d/", tarfile.DIRTYPE)] + [
        ("d/f%d" % i, tarfile.REGTYPE, rnd.randbytes(rnd.randrange(0, 300000)))
        for i in range(40)] + [("d/" + "l" * 150, tarfile.SYMTYPE, "f1")]
    data = _tar(entries, tail=bytes(3 * 1024 * 1024))
    want = _split(data, 1 << 20, engine_version="20.10")
    assert _observed(tmp_path, data, offload, "ts.json.gz") == want


def test_worker_reports_the_childs_error_and_leaves_no_process(tmp_path):
    data = _tar([("a", tarfile.REGTYPE, b"1"), ("./a", tarfile.REGTYPE, b"2")])
    with pytest.raises(ArchiveError, match="duplicates") as e:
        _observed(tmp_path, data, True, "dup.json.gz")
    assert e.value.entry == "./a"
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)      # the child was reaped


def test_records_become_entries_and_a_bad_line_is_named():
    """Each record becomes an Entry (blank lines skipped); a malformed or
    unknown record is an error naming its line, blank lines counted."""
    seg = base64.b64encode(b"h" * 512).decode()
    crc = base64.b64encode(crc64.CRC64(b"abc").digest()).decode()
    lines = ['{"type":2,"payload":"%s","position":0}' % seg,
             '{"type":1,"name":"d/a","size":3,"payload":"%s","position":1}' % crc,
             '',
             '{"type":2,"payload":"AAAA","position":2}']
    entries = list(tarsplit.iter_entries(io.BytesIO("\n".join(lines).encode())))
    assert [(e.type, e.name, e.size, e.position) for e in entries] == [
        (2, b"", 0, 0), (1, b"d/a", 3, 1), (2, b"", 0, 2)]
    assert entries[0].payload == b"h" * 512 and entries[1].payload == crc64.CRC64(b"abc").digest()
    with pytest.raises(tarsplit.TarSplitError, match="line 5"):
        list(tarsplit.iter_entries(io.BytesIO("\n".join(lines + ['{"type":1,"name":']).encode())))
    with pytest.raises(tarsplit.TarSplitError, match="line 2"):
        list(tarsplit.iter_entries(io.BytesIO("\n".join([lines[0], '{"type":7}']).encode())))
