"""The wire formats of our containerd client: HPACK against RFC 7541's own
examples, protobuf against hand-encoded bytes from the protobuf encoding
guide, and Docker's familiar names against containerd's full names."""

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import http2, protobuf
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.to_containerd import _full_name


def test_huffman_decodes_rfc7541_c4_1():
    assert http2.huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"


def test_huffman_refuses_bad_padding():
    with pytest.raises(http2.HTTP2Error, match="padding"):
        http2.huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4fe"))


def test_hpack_decodes_rfc7541_c4_requests_with_the_dynamic_table():
    d = http2.Decoder()
    assert d.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    # C.4.2: index 62 (0xbe) is the :authority the first request added
    assert d.decode(bytes.fromhex("828684be5886a8eb10649cbf")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
        ("cache-control", "no-cache")]
    # C.4.3: a literal custom-key, Huffman both sides
    assert d.decode(bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))[-1] == (
        "custom-key", "custom-value")


def test_hpack_literals_we_send_decode_back():
    headers = [(":path", "/containerd.services.leases.v1.Leases/Create"), ("te", "trailers"),
               ("containerd-namespace", "moby"), ("x-long", "v" * 300)]
    assert http2.Decoder().decode(http2.encode_headers(headers)) == headers


def test_protobuf_encodes_as_the_encoding_guide():
    # https://protobuf.dev/programming-guides/encoding: field 1 = 150 -> 08 96 01; field 2 = "testing"
    assert protobuf.encode([(1, 150)]) == bytes.fromhex("089601")
    assert protobuf.encode([(2, "testing")]) == bytes.fromhex("120774657374696e67")
    # proto3 leaves defaults out
    assert protobuf.encode([(1, 0), (2, ""), (3, False), (4, {}), (5, None)]) == b""


def test_protobuf_round_trip_of_nested_messages_and_maps():
    data = protobuf.encode([(1, "name"), (2, {"b": "2", "a": "1"}),
                            (3, [(1, "application/json"), (2, "sha256:00"), (3, 1 << 40)])])
    msg = protobuf.Message(data)
    assert msg.string(1) == "name"
    assert msg.map(2) == {"a": "1", "b": "2"}
    inner = msg.message(3)
    assert (inner.string(1), inner.string(2), inner.int(3)) == ("application/json", "sha256:00", 1 << 40)
    assert protobuf.Message(protobuf.encode([(1, -1)])).int(1) == -1


def test_protobuf_refuses_truncated_input():
    with pytest.raises(protobuf.ProtobufError):
        protobuf.Message(bytes.fromhex("1207746573"))


@pytest.mark.parametrize("familiar,full", [
    ("busybox:latest", "docker.io/library/busybox:latest"),
    ("strata/interop:2", "docker.io/strata/interop:2"),
    ("registry.example.com:5000/team/app:v1", "registry.example.com:5000/team/app:v1"),
    ("localhost/app:dev", "localhost/app:dev"),
    ("registry.example.com:5000/app", "registry.example.com:5000/app:latest"),
])
def test_familiar_names_become_containerd_names(familiar, full):
    assert _full_name(familiar) == full
