"""A raw HTTP/2 client for tests: frames written byte by byte (hyperframe, hpack), so a test can send
what no well-behaved library would (floods, malformed headers, frames on the wrong stream) and read
back exactly what the server answered. Used by tests/e2e/test_dataplane_http2*.py."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# RFC 9113 §7
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 5, 6, 7, 8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 9, 11


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # RST_STREAM's error code
    ended: bool = False

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class RawH2:
    """One connection: `send` frames, `read` them back. Answers nothing on its own unless told
    (`auto_window`): a test decides what the server gets."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_name or "default.test")
        self.sock: socket.socket = sock
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.frames: list[Frame] = []
        self.decoded: dict[int, list[tuple[bytes, bytes]]] = {}
        self.closed = False
        self.goaway: GoAwayFrame | None = None
        self.server_settings: dict[int, int] = {}

    # --- sending ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def send(self, *frames: Frame) -> None:
        self.write(b"".join(frame.serialize() for frame in frames))

    def handshake(self, settings: dict[int, int] | None = None) -> None:
        frame = SettingsFrame(0)
        frame.settings = settings or {}
        self.write(PREFACE + frame.serialize())
        ack = SettingsFrame(0)
        ack.flags.add("ACK")
        # The server's SETTINGS comes first: acknowledge it.
        self.wait(lambda: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in self.frames))
        for received in self.frames:
            if isinstance(received, SettingsFrame) and "ACK" not in received.flags:
                self.server_settings.update(received.settings)
        self.send(ack)

    def block(self, headers: list[tuple[str | bytes, str | bytes]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def headers(
        self,
        stream_id: int,
        headers: list[tuple[str | bytes, str | bytes]],
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> HeadersFrame:
        frame = HeadersFrame(stream_id)
        frame.data = self.block(headers)
        if end_stream:
            frame.flags.add("END_STREAM")
        if end_headers:
            frame.flags.add("END_HEADERS")
        return frame

    def request(
        self,
        stream_id: int,
        path: str,
        *,
        method: str = "GET",
        authority: str = "127.0.0.1",
        extra: list[tuple[str | bytes, str | bytes]] | None = None,
        end_stream: bool = True,
    ) -> HeadersFrame:
        headers: list[tuple[str | bytes, str | bytes]] = [
            (":method", method),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
        ]
        return self.headers(stream_id, headers + (extra or []), end_stream=end_stream)

    @staticmethod
    def data(stream_id: int, data: bytes, *, end_stream: bool = False) -> DataFrame:
        frame = DataFrame(stream_id)
        frame.data = data
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def rst(stream_id: int, code: int = CANCEL) -> RstStreamFrame:
        frame = RstStreamFrame(stream_id)
        frame.error_code = code
        return frame

    @staticmethod
    def ping(payload: bytes = b"12345678") -> PingFrame:
        frame = PingFrame(0)
        frame.opaque_data = payload
        return frame

    @staticmethod
    def settings(values: dict[int, int] | None = None) -> SettingsFrame:
        frame = SettingsFrame(0)
        frame.settings = values or {}
        return frame

    @staticmethod
    def window_update(stream_id: int, increment: int) -> WindowUpdateFrame:
        frame = WindowUpdateFrame(stream_id)
        frame.window_increment = increment
        return frame

    @staticmethod
    def continuation(stream_id: int, data: bytes, *, end: bool = False) -> ContinuationFrame:
        frame = ContinuationFrame(stream_id)
        frame.data = data
        if end:
            frame.flags.add("END_HEADERS")
        return frame

    # --- reading ---------------------------------------------------------------------------------

    def _read_once(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
            self.frames.append(frame)
            if isinstance(frame, HeadersFrame):
                # HPACK's table is the connection's: every block is decoded as it arrives, in order.
                self.decoded[id(frame)] = [(bytes(k), bytes(v)) for k, v in self.decoder.decode(frame.data, raw=True)]
            if isinstance(frame, GoAwayFrame):
                self.goaway = frame
        return True

    def wait(self, condition: Any, timeout: float = 10.0) -> bool:
        """Read until `condition()` holds, the connection closes, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.closed:
                return bool(condition())
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._read_once(min(left, 1.0))
        return True

    def wait_closed(self, timeout: float = 10.0) -> bool:
        return self.wait(lambda: self.closed, timeout)

    def response(self, stream_id: int, timeout: float = 10.0) -> Response:
        """The stream's answer, once it ended or was reset."""

        def done() -> bool:
            return any(
                frame.stream_id == stream_id
                and (isinstance(frame, RstStreamFrame) or "END_STREAM" in getattr(frame, "flags", ()))
                for frame in self.frames
            )

        self.wait(done, timeout)
        answer = Response()
        for frame in self.frames:
            if frame.stream_id != stream_id:
                continue
            if isinstance(frame, HeadersFrame):
                fields = self.decoded[id(frame)]
                if answer.status == 0:
                    answer.status = int(dict(fields)[b":status"])
                    answer.headers = fields
                else:
                    answer.trailers = fields
            elif isinstance(frame, DataFrame):
                answer.body += frame.data
            elif isinstance(frame, RstStreamFrame):
                answer.reset = frame.error_code
            if "END_STREAM" in getattr(frame, "flags", ()):
                answer.ended = True
        return answer

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
