"""RFC 9113 conformance of the data plane's HTTP/2 (h2c with prior knowledge), case by case as h2spec
checks it (h2spec is not packaged for Debian and no Go toolchain is at hand): raw frames from
tests/dataplane/h2_frames.py, one connection per case, the section in the case's id.

As h2spec does, a "stream error" is satisfied by RST_STREAM with the code or by a connection error
(GOAWAY) with it: RFC 9113 §5.4.1 lets an endpoint end the connection for a stream error. Our own
checks of the request head (§8.2) are held to the stricter RST_STREAM in test_dataplane_http2.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.dataplane import h2_frames as codes
from tests.dataplane.h2_frames import RawH2
from tests.dataplane.processes import DataPlane, dataplane, seed, upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    workdir: Path = tmp_path_factory.mktemp("h2spec")
    with upstream(workdir) as origin:
        document = seed({"name": "echo", "version": "v1", "methods": ["GET", "POST"], "targets": [{"url": origin.url}]})
        with dataplane(workdir, document) as running:
            yield running


@pytest.fixture
def client(node: DataPlane) -> Iterator[RawH2]:
    connection = RawH2(node.port)
    connection.handshake()
    yield connection
    connection.close()


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def connection_error(client: RawH2, *expected: int) -> None:
    assert client.wait_closed(10), "the connection stayed open"
    assert client.goaway is not None, "closed without GOAWAY"
    assert client.goaway.error_code in expected, f"GOAWAY {client.goaway.error_code}, expected {expected}"


def stream_error(client: RawH2, stream_id: int, *expected: int) -> None:
    def seen() -> bool:
        return client.goaway is not None or any(
            isinstance(f, RstStreamFrame) and f.stream_id == stream_id for f in client.frames
        )

    assert client.wait(seen, 10), "neither RST_STREAM nor GOAWAY"
    resets = [f.error_code for f in client.frames if isinstance(f, RstStreamFrame) and f.stream_id == stream_id]
    code = resets[0] if resets else client.goaway.error_code  # type: ignore[union-attr]
    assert code in expected, f"error {code}, expected {expected}"


def still_serves(client: RawH2, stream_id: int) -> None:
    client.send(client.request(stream_id, "/v1/echo/alive"))
    answer = client.response(stream_id)
    assert answer.status == 200 and json.loads(answer.body)["raw_path"] == "/alive"


def get(client: RawH2, stream_id: int, path: str = "/v1/echo/x", **kwargs: object) -> HeadersFrame:
    return client.request(stream_id, path, **kwargs)  # type: ignore[arg-type]


def headers_of(client: RawH2, stream_id: int, fields: list[tuple[str, str]], *, end_stream: bool = True) -> None:
    client.send(client.headers(stream_id, list(fields), end_stream=end_stream))  # type: ignore[arg-type]


BASE = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/v1/echo/x")]


# --- 3.5, 4, 5: the connection, frames, streams ----------------------------------------------------


def test_3_5_a_bad_preface_after_the_magic_is_a_connection_error(node: DataPlane) -> None:
    client = RawH2(node.port)
    try:
        # The magic, then a PING where the SETTINGS frame must come.
        client.write(codes.PREFACE + client.ping().serialize())
        connection_error(client, codes.PROTOCOL_ERROR)
    finally:
        client.close()


def test_4_1_an_unknown_frame_type_is_ignored(client: RawH2) -> None:
    client.write(raw_frame(0xEE, 0, 0, b"unknown"))
    client.send(client.ping(b"pingpong"))
    assert client.wait(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in client.frames))


def test_4_2_a_data_frame_over_the_max_frame_size_is_an_error(client: RawH2) -> None:
    client.send(get(client, 1, method="POST", end_stream=False))
    client.send(client.data(1, b"x" * 16385))
    stream_error(client, 1, codes.FRAME_SIZE_ERROR)


def test_4_2_a_headers_frame_over_the_max_frame_size_is_a_connection_error(client: RawH2) -> None:
    headers = [*BASE, *[(f"x-filler-{i}", "v" * 100) for i in range(200)]]
    block = client.block(headers)  # type: ignore[arg-type]
    assert len(block) > 16384
    client.write(raw_frame(0x1, 0x5, 1, block))
    connection_error(client, codes.FRAME_SIZE_ERROR)


def test_4_3_an_undecodable_header_block_is_a_compression_error(client: RawH2) -> None:
    client.write(raw_frame(0x1, 0x5, 1, b"\xff\xff\xff\xff\xff\xff\xff\xff"))
    connection_error(client, codes.COMPRESSION_ERROR)


def test_5_1_data_on_an_idle_stream_is_a_connection_error(client: RawH2) -> None:
    client.send(client.data(1, b"early", end_stream=True))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_5_1_data_on_a_half_closed_remote_stream_is_stream_closed(client: RawH2) -> None:
    client.send(get(client, 1, "/v1/echo/slow?seconds=1"))
    client.send(client.data(1, b"late"))
    stream_error(client, 1, codes.STREAM_CLOSED)


def test_5_1_1_an_even_stream_id_from_the_client_is_a_connection_error(client: RawH2) -> None:
    client.send(get(client, 2))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_5_1_1_a_smaller_stream_id_than_before_is_a_connection_error(client: RawH2) -> None:
    client.send(get(client, 5))
    assert client.response(5).status == 200
    client.send(get(client, 3))
    connection_error(client, codes.PROTOCOL_ERROR, codes.STREAM_CLOSED)


def test_5_5_an_unknown_frame_inside_a_header_block_is_a_connection_error(client: RawH2) -> None:
    first = get(client, 1)
    first.flags.discard("END_HEADERS")
    client.send(first)
    client.write(raw_frame(0xEE, 0, 1, b"x"))
    connection_error(client, codes.PROTOCOL_ERROR)


# --- 6: frame definitions ----------------------------------------------------------------------------


def test_6_1_data_on_stream_0_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x0, 0, 0, b"zero"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_1_data_with_a_pad_length_over_the_payload_is_a_connection_error(client: RawH2) -> None:
    client.send(get(client, 1, method="POST", end_stream=False))
    client.write(raw_frame(0x0, 0x8 | 0x1, 1, b"\x09abc"))  # PADDED, pad length 9 > payload
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_2_headers_on_stream_0_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x1, 0x5, 0, client.block(BASE)))  # type: ignore[arg-type]
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_2_a_priority_frame_inside_a_header_block_is_a_connection_error(client: RawH2) -> None:
    first = get(client, 1)
    first.flags.discard("END_HEADERS")
    client.send(first, PriorityFrame(1))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_3_priority_on_stream_0_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x2, 0, 0, b"\x00\x00\x00\x01\x10"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_3_a_priority_frame_of_the_wrong_length_is_a_stream_error(client: RawH2) -> None:
    client.write(raw_frame(0x2, 0, 1, b"\x00\x00\x00\x03"))
    stream_error(client, 1, codes.FRAME_SIZE_ERROR)


def test_6_4_rst_stream_on_stream_0_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x3, 0, 0, b"\x00\x00\x00\x08"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_4_rst_stream_on_an_idle_stream_is_a_connection_error(client: RawH2) -> None:
    client.send(client.rst(1))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_4_rst_stream_of_the_wrong_length_is_a_connection_error(client: RawH2) -> None:
    client.send(get(client, 1, "/v1/echo/slow?seconds=1"))
    client.write(raw_frame(0x3, 0, 1, b"\x00\x00\x08"))
    connection_error(client, codes.FRAME_SIZE_ERROR)


def test_6_5_a_settings_ack_with_a_payload_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x4, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"))
    connection_error(client, codes.FRAME_SIZE_ERROR)


def test_6_5_settings_on_a_stream_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x4, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_5_settings_of_a_length_not_a_multiple_of_6_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x4, 0, 0, b"\x00\x03\x00"))
    connection_error(client, codes.FRAME_SIZE_ERROR)


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        (0x2, 2, codes.PROTOCOL_ERROR),  # ENABLE_PUSH other than 0 or 1
        (0x4, 2**31, codes.FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE over 2^31-1
        (0x5, 16383, codes.PROTOCOL_ERROR),  # MAX_FRAME_SIZE under 2^14
        (0x5, 2**24, codes.PROTOCOL_ERROR),  # MAX_FRAME_SIZE over 2^24-1
    ],
    ids=["enable-push-2", "window-2^31", "frame-size-16383", "frame-size-2^24"],
)
def test_6_5_2_an_out_of_range_setting_is_a_connection_error(
    client: RawH2, setting: int, value: int, code: int
) -> None:
    client.write(raw_frame(0x4, 0, 0, setting.to_bytes(2, "big") + value.to_bytes(4, "big")))
    connection_error(client, code)


def test_6_5_3_settings_are_acknowledged_and_an_unknown_one_is_ignored(client: RawH2) -> None:
    before = sum(1 for f in client.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags)
    client.write(raw_frame(0x4, 0, 0, b"\x00\xff\x00\x00\x00\x01"))
    assert client.wait(
        lambda: sum(1 for f in client.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags) > before
    )
    still_serves(client, 1)


def test_6_7_a_ping_is_answered_with_the_same_payload(client: RawH2) -> None:
    client.send(client.ping(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    assert client.wait(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in client.frames))
    ack = next(f for f in client.frames if isinstance(f, PingFrame) and "ACK" in f.flags)
    assert ack.opaque_data == b"\x01\x02\x03\x04\x05\x06\x07\x08"


def test_6_7_a_ping_ack_from_the_client_is_not_answered(client: RawH2) -> None:
    ack = client.ping(b"ackackac")
    ack.flags.add("ACK")
    client.send(ack, client.ping(b"realping"))
    assert client.wait(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in client.frames))
    answered = [f.opaque_data for f in client.frames if isinstance(f, PingFrame)]
    assert answered == [b"realping"]


def test_6_7_ping_on_a_stream_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x6, 0, 1, b"12345678"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_7_a_ping_of_the_wrong_length_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x6, 0, 0, b"123456"))
    connection_error(client, codes.FRAME_SIZE_ERROR)


def test_6_8_goaway_on_a_stream_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x7, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_9_a_zero_window_increment_on_the_connection_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_9_a_zero_window_increment_on_a_stream_is_a_stream_error(client: RawH2) -> None:
    client.send(get(client, 1, "/v1/echo/slow?seconds=1"))
    client.write(raw_frame(0x8, 0, 1, b"\x00\x00\x00\x00"))
    stream_error(client, 1, codes.PROTOCOL_ERROR)


def test_6_9_a_window_update_of_the_wrong_length_is_a_connection_error(client: RawH2) -> None:
    client.write(raw_frame(0x8, 0, 0, b"\x00\x00\x01"))
    connection_error(client, codes.FRAME_SIZE_ERROR)


def test_6_9_1_a_connection_window_over_2_31_minus_1_is_a_flow_control_error(client: RawH2) -> None:
    client.send(client.window_update(0, 2**31 - 1), client.window_update(0, 2**31 - 1))
    connection_error(client, codes.FLOW_CONTROL_ERROR)


def test_6_9_1_a_stream_window_over_2_31_minus_1_is_a_flow_control_error(client: RawH2) -> None:
    client.send(get(client, 1, "/v1/echo/slow?seconds=1"))
    client.send(client.window_update(1, 2**31 - 1), client.window_update(1, 2**31 - 1))
    stream_error(client, 1, codes.FLOW_CONTROL_ERROR)


def test_6_9_2_a_smaller_initial_window_applies_to_open_streams(client: RawH2) -> None:
    client.send(client.settings({0x4: 1}))  # INITIAL_WINDOW_SIZE: one byte
    client.send(get(client, 1, "/v1/echo/large?bytes=100"))
    client.wait(lambda: any(isinstance(f, DataFrame) and f.stream_id == 1 for f in client.frames), 5)
    data = [f for f in client.frames if isinstance(f, DataFrame) and f.stream_id == 1]
    assert sum(len(f.data) for f in data) == 1
    client.send(client.window_update(1, 1000))
    assert client.response(1).body == b"L" * 100


def test_6_10_continuation_after_a_complete_header_block_is_a_connection_error(client: RawH2) -> None:
    client.send(get(client, 1, "/v1/echo/slow?seconds=1"), client.continuation(1, b"", end=True))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_10_continuation_on_another_stream_is_a_connection_error(client: RawH2) -> None:
    first = get(client, 1)
    first.flags.discard("END_HEADERS")
    client.send(first, client.continuation(3, b"", end=True))
    connection_error(client, codes.PROTOCOL_ERROR)


def test_6_10_a_header_block_split_over_continuations_is_one_request(client: RawH2) -> None:
    block = client.block(BASE)  # type: ignore[arg-type]
    first = HeadersFrame(1)
    first.data = block[:5]
    first.flags.add("END_STREAM")
    client.send(first, client.continuation(1, block[5:10]), client.continuation(1, block[10:], end=True))
    assert client.response(1).status == 200


# --- 8: HTTP message semantics ---------------------------------------------------------------------

MALFORMED: dict[str, Callable[[list[tuple[str, str]]], list[tuple[str, str]]]] = {
    "8.1.2-uppercase-name": lambda h: [*h, ("X-Test", "v")],
    "8.1.2.1-unknown-pseudo": lambda h: [*h, (":bogus", "v")],
    "8.1.2.1-response-pseudo-in-request": lambda h: [(":status", "200"), *h],
    "8.1.2.1-pseudo-after-regular": lambda h: [*h[:3], ("x-a", "b"), h[3]],
    "8.1.2.2-connection": lambda h: [*h, ("connection", "keep-alive")],
    "8.1.2.2-te-not-trailers": lambda h: [*h, ("te", "gzip, trailers")],
    "8.1.2.3-empty-path": lambda h: [*h[:3], (":path", "")],
    "8.1.2.3-no-method": lambda h: h[1:],
    "8.1.2.3-no-scheme": lambda h: [h[0], *h[2:]],
    "8.1.2.3-no-path": lambda h: h[:3],
    "8.1.2.3-two-methods": lambda h: [h[0], *h],
    "8.1.2.3-two-paths": lambda h: [*h, (":path", "/other")],
    "8.2.1-value-with-leading-space": lambda h: [*h, ("x-a", " padded")],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_8_a_malformed_request_is_a_stream_error(client: RawH2, name: str) -> None:
    headers_of(client, 1, MALFORMED[name](list(BASE)))
    stream_error(client, 1, codes.PROTOCOL_ERROR)


def test_8_1_2_6_a_body_longer_than_its_content_length_is_an_error(client: RawH2) -> None:
    headers_of(client, 1, [*BASE[:3], (":path", "/v1/echo/x"), ("content-length", "3")], end_stream=False)
    client.send(client.data(1, b"too long", end_stream=True))
    stream_error(client, 1, codes.PROTOCOL_ERROR)


def test_8_1_trailers_with_a_pseudo_header_are_a_stream_error(client: RawH2) -> None:
    client.send(client.request(1, "/v1/echo/x", method="POST", end_stream=False))
    client.send(client.data(1, b"body"))
    headers_of(client, 1, [(":method", "POST")], end_stream=True)
    stream_error(client, 1, codes.PROTOCOL_ERROR)


def test_8_1_request_trailers_are_dropped_and_the_request_answered(client: RawH2) -> None:
    client.send(client.request(1, "/v1/echo/x", method="POST", end_stream=False))
    client.send(client.data(1, b"body"))
    headers_of(client, 1, [("x-after-body", "sneaky")], end_stream=True)
    answer = client.response(1)
    echo = json.loads(answer.body)
    assert answer.status == 200 and echo["body"] == "body"
    assert not any(name == "x-after-body" for name, _ in echo["headers"])


def test_8_4_a_push_promise_from_the_client_is_a_connection_error(client: RawH2) -> None:
    promise = PushPromiseFrame(1)
    promise.promised_stream_id = 2
    promise.data = client.block(BASE)  # type: ignore[arg-type]
    promise.flags.add("END_HEADERS")
    client.send(promise)
    connection_error(client, codes.PROTOCOL_ERROR)


def test_a_post_body_arrives_and_the_answer_has_the_status(client: RawH2) -> None:
    client.send(client.request(1, "/v1/echo/post", method="POST", end_stream=False))
    client.send(client.data(1, b"hello "), client.data(1, b"world", end_stream=True))
    answer = client.response(1)
    assert answer.status == 200 and json.loads(answer.body)["body"] == "hello world"


def test_a_head_request_gets_headers_and_no_body(client: RawH2) -> None:
    client.send(client.request(1, "/v1/echo/x", method="HEAD"))
    answer = client.response(1)
    assert answer.status == 200 and answer.body == b"" and answer.ended
