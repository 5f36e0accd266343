"""The request body (ARCHITECTURE §5): read whole when small (so a retry can replay it), read ahead up
to the replay limit when chunked and a retry could want it, else streamed to the upstream as it
arrives. Every path enforces the endpoint's `max_body_bytes` (413) and the stall deadline (408), and
counts what came in for the access log (`Exchange.bytes_in`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .errors import BodyTooLarge, ClientGone, RequestTimeout
from .exchange import Exchange
from .retry import REPLAY_LIMIT
from .types import Receive

Body = bytes | AsyncIterator[bytes]


async def receive_chunk(receive: Receive, stall: float) -> tuple[bytes, bool]:
    try:
        message = await asyncio.wait_for(receive(), stall)
    except TimeoutError:
        raise RequestTimeout("the request body stalled") from None
    if message["type"] == "http.disconnect":
        raise ClientGone
    return message.get("body", b""), bool(message.get("more_body", False))


async def read_small(exchange: Exchange, limit: int, stall: float) -> bytes:
    """A body with a Content-Length within the replay limit, whole."""
    parts: list[bytes] = []
    total = 0
    more = True
    while more:
        chunk, more = await receive_chunk(exchange.receive, stall)
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        parts.append(chunk)
    exchange.bytes_in = total
    return b"".join(parts)


async def read_ahead(exchange: Exchange, limit: int, stall: float) -> tuple[Body, bool]:
    """Up to REPLAY_LIMIT bytes of a body of unknown length: (the whole body, True) if it ends by then,
    else (a stream of what was read and the rest, False)."""
    parts: list[bytes] = []
    total = 0
    more = True
    while more and total <= REPLAY_LIMIT:
        chunk, more = await receive_chunk(exchange.receive, stall)
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        if chunk:
            parts.append(chunk)
    if not more:
        exchange.bytes_in = total
        return b"".join(parts), True
    return stream(exchange, limit, stall, parts), False


async def stream(
    exchange: Exchange, limit: int, stall: float, first: list[bytes] | None = None
) -> AsyncIterator[bytes]:
    """The request body as it arrives, after `first` (what was read ahead, still to be sent)."""
    total = 0
    for chunk in first or ():
        exchange.body_streamed = True
        total += len(chunk)
        exchange.bytes_in = total
        yield chunk
    more = True
    while more:
        chunk, more = await receive_chunk(exchange.receive, stall)
        exchange.body_streamed = True
        total += len(chunk)
        exchange.bytes_in = total
        if total > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        if chunk:
            yield chunk
