"""The access log (ARCHITECTURE §13): one line per request on the `dataplane.access` logger, in the
format `DATAPLANE_ACCESS_LOG` names:

- `text` (the default): `<time> INFO dataplane.access request_id=… method=… path="…" status=… …`;
  the fields a client chooses (path, user agent) and the failure detail are quoted JSON strings, so
  a newline, a quote or a control character in them is escaped and can never start a new line or a
  field of its own;
- `json`: one JSON object per line (control characters escaped by the encoder);
- `off`: nothing.

Fields: time, request id, trace id (tracing.py: every request's with tracing on; off, only a
gateway-made error's, from a valid incoming `traceparent`; else `-` / empty), client address (the peer), method, path
(raw, without the query, at most 2 KiB), status, bytes in and out (bodies), duration and upstream
time (ms), endpoint, target, consumer (empty until an authentication plugin names one), error,
detail (what exactly failed: a target's address, an OS or TLS error; here, never in the answer),
user agent (at most 512 bytes).

Written off the hot path: each line is formatted whole when the request ends, and the lines go out as
one log record at most every `interval` seconds (or every `batch` lines), so the per-request cost is
one f-string instead of a LogRecord, a queue put and a format, and the log writer thread only writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from .exchange import Exchange

MAX_PATH = 2048
MAX_USER_AGENT = 512
AGENTS_KEPT = 256
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


# Anything but printable ASCII other than a quote or a backslash: a value without any goes in quotes as
# it is (the common case: one C-level search), one with some through the JSON encoder (`\\n`, `\\"`...).
_NEEDS_ESCAPING = re.compile(r"[^ !#-\[\]-~]").search


class AccessLog:
    interval = 0.2
    batch = 2048

    def __init__(self, log_format: str = "text", logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("dataplane.access")
        self.format = log_format
        self.off, self.json = log_format == "off", log_format == "json"
        self._prefix = f" INFO {self.logger.name} "
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._agents: dict[bytes, str] = {}

    def write(self, exchange: Exchange, elapsed: float) -> None:
        if self.off or not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        stamp = f"{self._stamp},{int((now - second) * 1000):03d}"
        # The client address, path and user agent as the line shows them (decoded, capped); inline, not
        # a helper: this runs once per request.
        client_pair = exchange.scope.get("client")
        client = client_pair[0] if client_pair else ""
        path = exchange.raw_path[:MAX_PATH].decode("latin-1")
        if self.json:
            agent = exchange.user_agent[:MAX_USER_AGENT].decode("latin-1")
            line = self._json(exchange, stamp, client, path, agent, elapsed)
        else:
            # A client's values in quotes, escaped when they need it (inline: this runs once per request).
            quoted_path = f'"{path}"' if _NEEDS_ESCAPING(path) is None else _dumps(path)
            trace = exchange.trace
            trace_id = trace.trace_id if trace is not None else "-"
            quoted_agent = self._agents.get(exchange.user_agent)
            if quoted_agent is None:
                quoted_agent = self._quote_agent(exchange.user_agent)
            line = (
                f"{stamp}{self._prefix}request_id={exchange.request_id}"
                f" method={exchange.method} endpoint={exchange.endpoint_key or '-'} target={exchange.target or '-'}"
                f" status={exchange.status or '-'} duration_ms={elapsed * 1000:.1f}"
                f" upstream_ms={exchange.upstream_seconds * 1000:.1f} error={exchange.error or '-'}"
                f" client={client or '-'} path={quoted_path} bytes_in={exchange.bytes_in}"
                f" bytes_out={exchange.bytes_out} trace_id={trace_id} consumer={exchange.consumer or '-'}"
                f" user_agent={quoted_agent}" + (f" detail={_dumps(exchange.detail)}" if exchange.detail else "")
            )
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.batch:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:
                self.flush()

    def _quote_agent(self, raw: bytes) -> str:
        """A user agent as the text line shows it, remembered: a node sees a few agents over and over, so
        most requests find theirs quoted already (at most AGENTS_KEPT are kept)."""
        agent = raw[:MAX_USER_AGENT].decode("latin-1")
        quoted = f'"{agent}"' if _NEEDS_ESCAPING(agent) is None else _dumps(agent)
        if len(self._agents) >= AGENTS_KEPT:
            self._agents.clear()
        self._agents[raw] = quoted
        return quoted

    def _json(self, exchange: Exchange, stamp: str, client: str, path: str, agent: str, elapsed: float) -> str:
        return _dumps(
            {
                "time": stamp,
                "request_id": exchange.request_id,
                "trace_id": exchange.trace.trace_id if exchange.trace is not None else "",
                "client": client,
                "method": exchange.method,
                "path": path,
                "status": exchange.status,
                "bytes_in": exchange.bytes_in,
                "bytes_out": exchange.bytes_out,
                "duration_ms": round(elapsed * 1000, 1),
                "upstream_ms": round(exchange.upstream_seconds * 1000, 1),
                "endpoint": exchange.endpoint_key or "",
                "target": exchange.target or "",
                "consumer": exchange.consumer,
                "error": exchange.error or "",
                "detail": exchange.detail,
                "user_agent": agent,
            }
        )

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if lines:
            record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, "\n".join(lines), (), None)
            record.preformatted = True  # process.LogFormatter writes it as is
            self.logger.handle(record)
