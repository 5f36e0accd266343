"""How the relay follows frame boundaries (`dataplane.tunnel.Frames`, RFC 6455 §5.2) so that the close
frame the gateway sends on idle or drain (1001, §7.4.1) never lands inside a relayed frame; frames made
by the `websockets` library, split at every byte; hostile streams. End to end (the `websockets` client
seeing 1001): tests/e2e/test_dataplane_wss.py."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from websockets.frames import Close, Frame, Opcode

from dataplane.tunnel import Frames, Tunnel, UpstreamSide, close_frame
from tests.dataplane.test_websocket_handshake import FakeTransport


def frame(opcode: Opcode, data: bytes, *, masked: bool, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=masked, extensions=[])


STREAM = [
    frame(Opcode.TEXT, b"hi", masked=True),
    frame(Opcode.BINARY, os.urandom(300), masked=True),  # a 16-bit length
    frame(Opcode.BINARY, os.urandom(70000), masked=True),  # a 64-bit length
    frame(Opcode.TEXT, b"frag", masked=True, fin=False),
    frame(Opcode.PING, b"p", masked=True),  # a control frame inside a fragmented message
    frame(Opcode.CONT, b"ment", masked=True),
]


def ends_of(stream: list[bytes]) -> set[int]:
    ends, position = set(), 0
    for one in stream:
        position += len(one)
        ends.add(position)
    return ends


def test_every_end_of_a_frame_is_a_boundary_and_no_byte_inside_one_is() -> None:
    data = b"".join(STREAM)
    ends = ends_of(STREAM)
    frames = Frames(masked=True)
    for index in range(len(data)):
        frames.feed(data[index : index + 1])
        assert frames.at_boundary == (index + 1 in ends), index + 1


@pytest.mark.parametrize("seed", range(20))
def test_boundaries_survive_any_split_of_the_stream(seed: int) -> None:
    data = b"".join(STREAM * 3)
    ends = ends_of(STREAM * 3)
    chance = random.Random(seed)
    frames = Frames(masked=True)
    position = 0
    while position < len(data):
        step = chance.choice([1, 2, 3, 7, 13, 100, 4096, 65536])
        frames.feed(data[position : position + step])
        position = min(position + step, len(data))
        assert frames.at_boundary == (position in ends), position
    assert frames.at_boundary and not frames.closed


def test_a_close_frame_that_went_by_is_noted() -> None:
    frames = Frames(masked=False)
    frames.feed(frame(Opcode.TEXT, b"bye soon", masked=False))
    assert not frames.closed
    frames.feed(frame(Opcode.CLOSE, Close(1000, "done").serialize(), masked=False))
    assert frames.closed and frames.at_boundary


@pytest.mark.parametrize(
    "header",
    [
        b"\x83\x80\x00\x00\x00\x00",  # reserved opcode 3
        b"\x8b\x80\x00\x00\x00\x00",  # reserved control opcode 11
        b"\x09\x80\x00\x00\x00\x00",  # a fragmented ping
        b"\x89\xfe\x00\x80\x00\x00\x00\x00",  # a ping of 128 bytes
        b"\x82\xff\x80" + b"\x00" * 7 + b"\x00\x00\x00\x00",  # a 64-bit length with its top bit set
        b"\x82\x05hello",  # unmasked from the client
    ],
)
def test_a_header_no_peer_may_send_stops_the_following_for_good(header: bytes) -> None:
    frames = Frames(masked=True)
    frames.feed(header)
    assert frames.lost and not frames.at_boundary
    frames.feed(frame(Opcode.TEXT, b"x", masked=True))
    assert not frames.at_boundary


def test_random_bytes_never_raise() -> None:
    chance = random.Random(7)
    for _ in range(200):
        frames = Frames(masked=chance.random() < 0.5)
        for _ in range(20):
            frames.feed(chance.randbytes(chance.randint(0, 64)))
        assert frames.left >= 0 and len(frames.partial) < 14


def test_a_frame_claiming_two_to_the_62_bytes_is_never_at_a_boundary() -> None:
    frames = Frames(masked=True)
    frames.feed(b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"\x01\x02\x03\x04" + b"x" * 4096)
    assert not frames.at_boundary and not frames.lost


def test_the_close_frames_are_1001_masked_only_toward_the_upstream() -> None:
    plain = close_frame(b"gateway shutting down", masked=False)
    assert plain[:2] == bytes((0x88, 23)) and plain[2:4] == (1001).to_bytes(2, "big")
    masked = close_frame(b"gateway shutting down", masked=True)
    assert masked[:2] == bytes((0x88, 0x80 | 23))
    key, body = masked[2:6], masked[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == plain[2:]
    assert close_frame(b"x" * 500, masked=False)[1] == 125  # a control frame's payload is at most 125 bytes


def _tunnel(loop: asyncio.AbstractEventLoop) -> tuple[Tunnel, FakeTransport, FakeTransport]:
    client, upstream_transport = FakeTransport(), FakeTransport()
    side = UpstreamSide(loop)
    side.connection_made(upstream_transport)
    tunnel = Tunnel(loop, client, side, idle_timeout=60, pause_client=lambda: None, resume_client=lambda: None)
    tunnel.start([])
    return tunnel, client, upstream_transport


def test_drain_mid_frame_cuts_that_side_and_says_goodbye_to_the_other() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tunnel, client, upstream = _tunnel(loop)
        tunnel.from_client(frame(Opcode.BINARY, b"x" * 1000, masked=True)[:500])  # half a frame upstream
        tunnel.close("drain")
        assert upstream.aborted and upstream.written[-1][:1] != b"\x88"
        assert client.closed and client.written == [close_frame(b"gateway shutting down", masked=False)]

    asyncio.run(scenario())


def test_no_second_close_frame_goes_where_one_went_already_nor_to_a_side_that_does_not_read() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tunnel, client, upstream = _tunnel(loop)
        tunnel.from_client(frame(Opcode.CLOSE, Close(1000, "").serialize(), masked=True))
        client.buffered = 10
        tunnel.close("idle")
        assert upstream.aborted and len(upstream.written) == 1  # the client's own close only
        assert client.aborted and client.written == []

    asyncio.run(scenario())
