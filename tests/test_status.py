"""The agent's status page server (``--http-addr``): what it answers, what it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from importlib import resources

import pytest

from somasync import MessageType, SynapseNode, SynapseNodeBuilder
from somasync.cli.status import MAX_HEADER_BYTES, MAX_REQUEST_LINE, StatusServer
from somasync.errors import ConfigError
from somasync.testing import wait_until

DEADLINE = 20.0  # generous: polls end as soon as the condition holds


async def _node(name: str, seeds: list[str], workers: int = 0) -> SynapseNode:
    builder = (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
               .with_workers(workers))
    for seed in seeds:
        builder = builder.add_bootstrap_peer(seed)
    node, _messages, _events = builder.build()
    await node.start()
    return node


@contextlib.asynccontextmanager
async def _mesh(workers: int = 0
                ) -> AsyncIterator[tuple[SynapseNode, SynapseNode, StatusServer]]:
    """Two nodes, b joined through a, b's message delivered at a, a's status served (a
    with ``workers`` worker processes)."""
    nodes: list[SynapseNode] = []
    server = None
    try:
        a = await _node("node-a", [], workers)
        nodes.append(a)
        b = await _node("node-b", [a.listen_address])
        nodes.append(b)
        server = StatusServer(a, "127.0.0.1:0")
        await server.start()
        await wait_until(lambda: "node-b" in a.connected_peers(), "a linked to b", DEADLINE)
        await b.broadcast_message(MessageType.Data(text="hello"))
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while (await a.get_stats()).messages_processed < 1:
            assert asyncio.get_running_loop().time() < deadline, "b's message not delivered"
            await asyncio.sleep(0.05)
        yield a, b, server
    finally:
        if server is not None:
            await server.close()
        for node in reversed(nodes):
            await node.stop()


async def _request(address: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        writer.write_eof()  # all of it: a request cut short is seen as such at once
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines)}
    assert status_line.startswith("HTTP/1.1 ")
    if not raw.startswith(b"HEAD "):  # HEAD: the length GET's body would have
        assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, body


def _get(path: str, host: str = "127.0.0.1", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def _check_security_headers(headers: dict[str, str]) -> None:
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"


@pytest.mark.parametrize("workers", [0, 2], ids=["embedded", "workers2"])
async def test_api_status_describes_the_node_its_members_overlay_and_latency(
        workers: int) -> None:
    import jsonschema

    document = json.loads(resources.files("somasync.cli").joinpath("schema.json")
                          .read_text())
    async with _mesh(workers) as (_a, b, server):
        status, headers, body = await _request(server.address, _get("/api/status"))
        assert status == 200
        assert headers["content-type"] == "application/json"
        _check_security_headers(headers)
        value = json.loads(body)
        jsonschema.validate(value, {**document, "$ref": "#/$defs/status"})
        assert value["node_id"] == "node-a"
        assert [m["node_id"] for m in value["members"]] == ["node-a", "node-b"]
        peer = value["members"][1]
        assert peer["state"] == "alive"
        assert peer["linked"] is True
        assert peer["address"] == b.listen_address
        assert peer["lazy_streams"] == 0  # one origin, one link: eager
        assert value["overlay"]["active"] == [b.listen_address]
        assert value["counters"]["delivered"] == 1
        assert value["latency"]["count"] == 1
        assert sum(value["latency"]["counts"]) == 1
        assert value["tree"] is not None


async def test_the_page_and_its_files_are_served_and_anything_else_is_not_found() -> None:
    async with _mesh() as (_, _b, server):
        status, headers, body = await _request(server.address, _get("/"))
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        _check_security_headers(headers)
        # No external resource (the page must work offline), nothing inline (the CSP).
        assert not re.search(rb"(src|href)=\"(?!/status\.)", body)
        assert b"<script>" not in body
        assert b"<style" not in body
        for path, kind in (("/status.js", "text/javascript"), ("/status.css", "text/css")):
            status, headers, _ = await _request(server.address, _get(path))
            assert status == 200
            assert headers["content-type"].startswith(kind)
        status, _, body = await _request(server.address, _get("/api/status?x=1", method="HEAD"))
        assert status == 200
        assert body == b""
        for path in ("/nope", "/api/status/", "/../etc/passwd", "/status.html"):
            status, headers, _ = await _request(server.address, _get(path))
            assert status == 404, path
            _check_security_headers(headers)


async def test_only_get_and_head_are_allowed() -> None:
    async with _mesh() as (_, _b, server):
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            raw = (f"{method} /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Length: 5\r\n\r\nhello").encode()
            status, headers, _ = await _request(server.address, raw)
            assert status == 405, method
            assert headers["allow"] == "GET, HEAD"
            _check_security_headers(headers)


async def test_oversized_malformed_and_misdirected_requests_are_refused() -> None:
    async with _mesh() as (_, _b, server):
        long_path = "/" + "a" * MAX_REQUEST_LINE
        status, _, _ = await _request(server.address, _get(long_path))
        assert status == 414
        many = "".join(f"X-Filler-{i}: {'b' * 100}\r\n"
                       for i in range(MAX_HEADER_BYTES // 100))
        raw = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n".encode()
        status, _, _ = await _request(server.address, raw)
        assert status == 431
        for raw in (b"GET /\r\n\r\n", b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nbad header\r\n\r\n",
                    b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
                    b"GET / HTTP/1.1\r\n", b""):  # cut short, empty
            status, _, _ = await _request(server.address, raw)
            assert status == 400, raw
        status, _, _ = await _request(server.address, b"GET / HTTP/2.0\r\n\r\n")
        assert status == 505
        # A name that resolves here by rebinding is not this server's name.
        status, _, body = await _request(server.address, _get("/api/status", "evil.example"))
        assert status == 421
        assert b"node-a" not in body
        for host in ("localhost", server.address, "[::1]:8080"):
            status, _, _ = await _request(server.address, _get("/", host))
            assert status == 200, host
        # The server still answers after all that.
        status, _, _ = await _request(server.address, _get("/api/status"))
        assert status == 200


async def test_a_bad_address_names_the_http_addr_field() -> None:
    node, _, _ = SynapseNodeBuilder().with_bind_address("127.0.0.1:0").build()
    with pytest.raises(ConfigError) as caught:
        StatusServer(node, "8080")
    assert caught.value.field == "http_addr"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = StatusServer(node, f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(ConfigError) as caught:
            await server.start()
    assert caught.value.field == "http_addr"


def test_the_script_never_renders_data_as_markup() -> None:
    script = resources.files("somasync.cli").joinpath("status.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "Function("):
        assert sink not in script
    assert "textContent" in script



def test_the_agent_refuses_a_bad_http_address_naming_the_field(
        capsys: pytest.CaptureFixture[str]) -> None:
    from somasync.cli import main

    assert main(["agent", "--bind", "127.0.0.1:0", "--rpc", "off", "--data-dir", "off",
                 "--http-addr", "nowhere"]) == 2
    assert "http_addr" in capsys.readouterr().err


def test_the_page_is_not_opened_to_the_network_unless_asked() -> None:
    """A review found --http-addr took a routable address without a word, and then
    answered any Host: every member's address and key, readable through DNS rebinding by
    any page a browser on that network opened."""
    node, _, _ = SynapseNodeBuilder().with_bind_address("127.0.0.1:0").build()
    for address in ("0.0.0.0:0", "192.0.2.1:8080", "example.com:8080"):
        with pytest.raises(ConfigError, match="http-allow-network") as caught:
            StatusServer(node, address)
        assert caught.value.field == "http_addr"
    open_ = StatusServer(node, "0.0.0.0:0", allow_network=True)
    assert open_._host_allowed("192.0.2.7:8080")  # by IP address, as asked
    assert not open_._host_allowed("evil.example:8080")  # never by a name
    bound = StatusServer(node, "192.0.2.1:8080", allow_network=True)
    assert bound._host_allowed("192.0.2.1:8080")
    assert not bound._host_allowed("192.0.2.9:8080")
