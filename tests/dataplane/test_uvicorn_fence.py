"""A fence around the uvicorn and httptools internals `dataplane/server.py` builds on (its protocol
subclasses uvicorn's `HttpToolsProtocol`, replaces its request cycle, and calls the parser itself).
None of these are public API, so an upgrade may move them without notice: this test names each
one server.py uses, with the signature it calls it with, and the versions it was checked against
(requirements/dataplane.txt). When it fails after an upgrade, re-read uvicorn's httptools_impl.py
against server.py before moving the pins."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements" / "dataplane.txt"


def pinned(package: str) -> str:
    found = re.search(rf"^{package}==(\S+)", REQUIREMENTS.read_text(), re.M)
    assert found, f"{package} is not pinned in {REQUIREMENTS.name}"
    return found.group(1)


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_installed_versions_are_the_pinned_ones_this_fence_was_checked_against() -> None:
    assert uvicorn.__version__ == pinned("uvicorn") == "0.54.0"
    assert httptools.__version__ == pinned("httptools") == "0.9.0"


# The methods server.py overrides or calls, with the parameters uvicorn calls them with.
PROTOCOL_METHODS = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "send_400_response": ["self", "msg"],
    "_unset_keepalive_if_required": ["self"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "shutdown": ["self"],
    "_start_asgi_task": None,  # server.py defines its own; uvicorn must still call it by this name
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_METHODS))
def test_the_protocol_methods_server_py_overrides_keep_their_signatures(name: str) -> None:
    method = getattr(httptools_impl.HttpToolsProtocol, name, None)
    expected = PROTOCOL_METHODS[name]
    if expected is None:
        source = inspect.getsource(httptools_impl.HttpToolsProtocol)
        assert f"self.{name}(" in source, f"uvicorn no longer calls {name}"
        return
    assert callable(method), f"HttpToolsProtocol.{name} is gone"
    assert parameters(method) == expected


def test_uvicorn_calls_the_cycle_hooks_server_py_relies_on() -> None:
    """LeanCycle stands in for RequestResponseCycle: uvicorn's code that stays (shutdown, the
    pipeline) reads these attributes of the cycle."""
    source = inspect.getsource(httptools_impl.HttpToolsProtocol)
    for used in ("self.cycle.response_complete", "self.cycle.keep_alive", "self.pipeline.pop()", "run_asgi(app)"):
        assert used in source, used
    cycle = inspect.signature(httptools_impl.RequestResponseCycle.run_asgi)
    assert list(cycle.parameters) == ["self", "app"]


def test_the_module_level_names_server_py_imports_are_there() -> None:
    assert isinstance(httptools_impl.STATUS_LINE, dict) and httptools_impl.STATUS_LINE[200].startswith(b"HTTP/1.1 200")
    assert set(range(100, 600)) <= set(httptools_impl.STATUS_LINE)
    assert isinstance(flow_control.HIGH_WATER_LIMIT, int)
    for name in ("pause_reading", "resume_reading", "pause_writing", "resume_writing", "drain"):
        assert callable(getattr(flow_control.FlowControl, name)), name
    assert inspect.iscoroutinefunction(flow_control.FlowControl.drain)
    assert "total_requests" in vars(ServerState())
    assert {"connections", "tasks"} <= set(vars(ServerState()))


def test_a_live_protocol_has_the_attributes_server_py_reads_and_writes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        config = Config(app=app, http="httptools", ws="none", lifespan="off", log_config=None)
        made: list[httptools_impl.HttpToolsProtocol] = []

        def factory() -> httptools_impl.HttpToolsProtocol:
            protocol = httptools_impl.HttpToolsProtocol(config, ServerState(), {}, _loop=loop)
            made.append(protocol)
            return protocol

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if made and made[0].transport is not None:
                break
            await asyncio.sleep(0.01)
        protocol = made[0]
        found = {name: getattr(protocol, name, AttributeError) for name in ATTRIBUTES}
        found["flow"] = type(protocol.flow)
        writer.close()
        server.close()
        await server.wait_closed()
        return found

    found = asyncio.run(go())
    missing = [name for name, value in found.items() if value is AttributeError]
    assert missing == []
    assert found["flow"] is flow_control.FlowControl
    assert isinstance(found["parser"], httptools.HttpRequestParser)
    assert found["scheme"] == "http" and found["client"][0] == "127.0.0.1"


# What server.py reads or sets on the protocol instance (besides its own attributes).
ATTRIBUTES = (
    "app",
    "client",
    "connections",
    "cycle",
    "expect_100_continue",
    "flow",
    "headers",
    "loop",
    "parser",
    "pipeline",
    "root_path",
    "scheme",
    "scope",
    "server",
    "server_state",
    "tasks",
    "timeout_keep_alive",
    "transport",
)


def test_the_httptools_parser_calls_server_py_makes() -> None:
    for name in ("feed_data", "get_http_version", "get_method", "should_keep_alive", "set_dangerous_leniencies"):
        assert callable(getattr(httptools.HttpRequestParser, name)), name
    url = httptools.parse_url(b"/a%2Fb?x=1")
    assert (url.path, url.query) == (b"/a%2Fb", b"x=1")
    assert issubclass(httptools.HttpParserUpgrade, Exception) and issubclass(httptools.HttpParserError, Exception)
