"""TLS and the PROXY header on one listener (HAProxy's `bind ... accept-proxy ssl crt`, an L4 balancer in front):
the header in plaintext, then the TLS handshake, whether the ClientHello comes in the header's segment or later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect

from proxy_core.datapath.proxyproto import build_v1, build_v2
from tests.conftest import EngineFactory, EngineProc, unit, wait_until
from tests.integration.tcp_peers import socket_from
from tests.integration.test_edge_proxy import ALLOWED

pytestmark = pytest.mark.asyncio


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _engine(start_engine: EngineFactory, tmp_path: Path, ca: trustme.CA, backend_flag: str) -> EngineProc:
    leaf = ca.issue_cert("a.test")
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    config = tmp_path / "wsproxy.toml"
    config.write_text(
        f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'proxy_protocol = true\nproxy_protocol_from = ["{ALLOWED}"]\n\n[timeouts]\nhead = 2\n'
    )
    return await start_engine("-c", str(config), "--backend", backend_flag, "--access-log", "access.jsonl", listen=None)


async def _coalesced_handshake(port: int, ca: trustme.CA, header: bytes) -> tuple[str, bytes]:
    """Send the PROXY header and the ClientHello in one segment (as an L4 balancer does), then one TLS record."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _client_context(ca).wrap_bio(incoming, outgoing, server_hostname="a.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = socket_from(ALLOWED, port)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(header + outgoing.read())
        while True:
            incoming.write(await asyncio.wait_for(reader.read(65536), unit(5)))
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
        writer.write(outgoing.read())
        tls.write(b"GET /plain HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        writer.write(outgoing.read())
        answer, closed = b"", False
        while b"\r\n\r\n" not in answer and not closed:
            data = await asyncio.wait_for(reader.read(65536), unit(5))
            incoming.write(data)
            closed = not data
            with contextlib.suppress(ssl.SSLWantReadError):
                while chunk := tls.read(65536):  # b"" once the engine's close_notify is read
                    answer += chunk
                closed = True
        return tls.version() or "", answer
    finally:
        writer.close()


async def test_wss_behind_a_proxy_header_with_the_header_address_in_the_logs(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path
) -> None:
    """A wss:// client after a v1 and a v2 header: echoed, and the header's address is the client everywhere."""
    ca = trustme.CA()
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _engine(start_engine, tmp_path, ca, backend.flag)
    clients = {
        "203.0.113.7:4242": build_v1(("203.0.113.7", 4242), ("127.0.0.1", engine.port)),
        "198.51.100.9:5555": build_v2(("198.51.100.9", 5555), ("127.0.0.1", engine.port)),
    }
    async with engine.client() as control:
        for address, header in clients.items():
            sock = socket_from(ALLOWED, engine.port)
            sock.sendall(header)  # alone: the ClientHello follows in its own segment
            async with connect(
                f"wss://a.test:{engine.port}/ws",
                sock=sock,
                ssl=_client_context(ca),
                server_hostname="a.test",
                open_timeout=unit(5),
            ) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), unit(5)) == "hi"
                detail = await control.server(backend.name)
                assert [c["client"] for c in detail["connections"]] == [address]
        listener = (await control.status())["listeners"][0]
        assert listener["tls"] is True and listener["proxy_protocol"] is True
    access = tmp_path / "access.jsonl"
    await wait_until(lambda: access.exists() and len(access.read_text().splitlines()) == 2, what="two access lines")
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert [line["client"] for line in lines] == list(clients)
    assert all(line["tls"]["sni"] == "a.test" for line in lines), lines


async def test_client_hello_in_the_header_segment(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path
) -> None:
    """The ClientHello arriving in the same segment as the header is not lost: the handshake and a request complete."""
    ca = trustme.CA()
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _engine(start_engine, tmp_path, ca, backend.flag)
    header = build_v2(("192.0.2.1", 1000), ("127.0.0.1", engine.port))
    version, answer = await _coalesced_handshake(engine.port, ca, header)
    assert version == "TLSv1.3"
    assert answer.startswith(b"HTTP/1.1 "), answer


async def test_plaintext_after_the_header_is_a_counted_tls_failure(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path
) -> None:
    """Plain HTTP after a good header fails the handshake, is counted, and the next TLS client is served."""
    ca = trustme.CA()
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _engine(start_engine, tmp_path, ca, backend.flag)
    sock = socket_from(ALLOWED, engine.port)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(build_v1(("203.0.113.7", 1), ("127.0.0.1", engine.port)) + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with contextlib.suppress(ConnectionResetError):  # closed by the engine, a reset if our bytes were unread
        assert await asyncio.wait_for(reader.read(), unit(5)) == b""
    writer.close()
    async with engine.client() as control:

        async def failed() -> dict[str, object] | None:
            listener = (await control.status())["listeners"][0]
            return listener if listener["handshake_failures"] >= 1 else None

        listener = await wait_until(failed, what="the failed handshake counted")
    assert listener["failures_by_reason"] == {"plaintext HTTP on a TLS port": 1}, listener
    _, answer = await _coalesced_handshake(engine.port, ca, build_v1(("192.0.2.2", 2), ("127.0.0.1", 1)))
    assert answer.startswith(b"HTTP/1.1 ")
    assert engine.proc.returncode is None


async def test_a_handshake_not_done_after_the_header_is_a_tls_timeout(
    start_engine: EngineFactory, tmp_path: Path
) -> None:
    """After a good PROXY header, a TLS handshake not finished within `timeouts.head` is closed and counted as a
    TLS "timeout", not as a bad header."""
    engine = await _engine(start_engine, tmp_path, trustme.CA(), "b1=127.0.0.1:9")
    sock = socket_from(ALLOWED, engine.port)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(build_v1(("203.0.113.7", 4242), ("127.0.0.1", engine.port)) + b"\x16\x03\x01\x02\x00\x01")
    started = asyncio.get_running_loop().time()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), unit(6)) == b""
    assert asyncio.get_running_loop().time() - started >= 1.5  # the head deadline is 2 s
    async with engine.client() as client:

        async def counted() -> dict[str, object] | None:
            item: dict[str, object] = (await client.status())["listeners"][0]
            return item if item["handshake_failures"] else None

        listener = await wait_until(counted, what="the TLS timeout counted")
    assert listener["failures_by_reason"] == {"timeout": 1} and listener["bad_headers"] == 0, listener
    writer.close()
