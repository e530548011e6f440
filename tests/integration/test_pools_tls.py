"""Pools chosen by TLS server name: terminated listeners route on the handshake's SNI (421 when the Host names
another site), passthrough listeners read the ClientHello and relay the encrypted bytes untouched."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve

from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit
from tests.integration.test_pools import handshakes

Backends = Callable[[int], Awaitable[list[EchoBackend]]]


def _write(path: Path, leaf: trustme.LeafCert) -> tuple[Path, Path]:
    cert, key = path.with_suffix(".pem"), path.with_suffix(".key")
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return cert, key


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def wss_echo(port: int, ca: trustme.CA, name: str) -> None:
    """wss://NAME through the engine at 127.0.0.1:port: SNI and Host both NAME; one echo."""
    async with connect(f"wss://{name}:{port}/ws", ssl=client_context(ca), host="127.0.0.1", open_timeout=unit(5)) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "hello"


def pools_text(backends: list[tuple[str, str]]) -> str:
    return "".join(
        f'[[pool]]\nname = "{pool}"\n[[pool.server]]\nname = "n1"\naddress = "{address}"\n'
        for pool, address in backends
    )


async def test_terminated_tls_routes_on_sni_then_host_and_refuses_a_mismatch_with_421(
    tmp_path: Path, start_engine: EngineFactory, echo_backends: Backends, ca: trustme.CA
) -> None:
    """SNI chat.test goes to chat, Host api.test (SNI api.test) to api; SNI chat.test with Host api.test is a 421."""
    b1, b2 = await echo_backends(2)
    chat = _write(tmp_path / "chat", ca.issue_cert("chat.test"))
    api = _write(tmp_path / "api", ca.issue_cert("api.test"))
    text = (
        f'[[listener]]\naddress = "127.0.0.1:0"\ntls_cert = "{chat[0]}"\ntls_key = "{chat[1]}"\n'
        f'[[listener.certificate]]\ncert = "{api[0]}"\nkey = "{api[1]}"\n'
        + pools_text([("chat", b1.address), ("api", b2.address)])
        + '[[route]]\nsni = "chat.test"\npool = "chat"\n[[route]]\nhost = "api.test"\npool = "api"\n'
    )
    (tmp_path / "tls.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "tls.toml"), listen=None)
    await wss_echo(engine.port, ca, "chat.test")
    await wss_echo(engine.port, ca, "api.test")
    assert (b1.accepted, b2.accepted) == (1, 1)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", engine.port, ssl=client_context(ca), server_hostname="chat.test"),
        unit(5),
    )
    try:
        writer.write(b"GET /ws HTTP/1.1\r\nHost: api.test\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), unit(5))
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), answer
    assert (b1.accepted, b2.accepted) == (1, 1)
    async with engine.client() as client:
        status = await client.status()
    assert status["unrouted"] == {"not_found": 0, "misdirected": 1}
    refused = [e for e in await handshakes(engine) if e["status"] == 421]
    assert [(e["server"], e["host"], e["tls"]["sni"]) for e in refused] == [(None, "api.test", "chat.test")]


class TlsEcho:
    """A wss echo server on 127.0.0.1 with its own certificate: the backend of a passthrough pool."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.server: Server | None = None
        self.accepted = 0

    async def _echo(self, connection: ServerConnection) -> None:
        self.accepted += 1
        with contextlib.suppress(Exception):
            async for message in connection:
                await connection.send(message)

    async def start(self) -> str:
        self.server = await serve(self._echo, "127.0.0.1", 0, ssl=self.context)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def tls_echo(ca: trustme.CA) -> AsyncIterator[Callable[[str], Awaitable[tuple[TlsEcho, str]]]]:
    started: list[TlsEcho] = []

    async def make(name: str) -> tuple[TlsEcho, str]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        backend = TlsEcho(context)
        started.append(backend)
        return backend, await backend.start()

    try:
        yield make
    finally:
        for backend in started:
            if backend.server is not None:
                backend.server.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(backend.server.wait_closed(), unit(5))


async def passthrough(
    tmp_path: Path, start_engine: EngineFactory, tls_echo: Callable[[str], Awaitable[tuple[TlsEcho, str]]]
) -> tuple[EngineProc, TlsEcho, TlsEcho]:
    chat, chat_address = await tls_echo("chat.test")
    other, other_address = await tls_echo("other.test")
    text = (
        '[[listener]]\naddress = "127.0.0.1:0"\ndefault_pool = "other"\n'
        + pools_text([("chat", chat_address), ("other", other_address)])
        + '[[route]]\nsni = "*.chat.test"\npool = "chat"\n[[route]]\nsni = "chat.test"\npool = "chat"\n'
    )
    (tmp_path / "pass.toml").write_text(text)
    engine = await start_engine("-c", str(tmp_path / "pass.toml"), listen=None)
    return engine, chat, other


async def test_passthrough_reads_the_client_hello_and_relays_tls_untouched(
    tmp_path: Path,
    start_engine: EngineFactory,
    tls_echo: Callable[[str], Awaitable[tuple[TlsEcho, str]]],
    ca: trustme.CA,
) -> None:
    """No certificate on the listener: SNI chat.test reaches the chat backend's own TLS, other names the default."""
    engine, chat, other = await passthrough(tmp_path, start_engine, tls_echo)
    await wss_echo(engine.port, ca, "chat.test")  # verified against the backend's certificate: end to end TLS
    await wss_echo(engine.port, ca, "other.test")
    assert (chat.accepted, other.accepted) == (1, 1)
    events = await handshakes(engine)
    assert [(e["pool"], e["route"]) for e in events] == [("chat", 1), ("other", None)]
    async with engine.client() as client:
        status = await client.status()
    assert [r["matched"] for r in status["routes"]] == [0, 1]


async def test_passthrough_sends_plaintext_to_the_default_pool(
    tmp_path: Path,
    start_engine: EngineFactory,
    tls_echo: Callable[[str], Awaitable[tuple[TlsEcho, str]]],
) -> None:
    """Bytes that are no ClientHello are routed without a server name (the default pool) and relayed as they are."""
    engine, chat, _other = await passthrough(tmp_path, start_engine, tls_echo)
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: chat.test\r\n\r\n")
        await asyncio.wait_for(reader.read(), unit(5))  # the TLS backend drops plaintext
    finally:
        writer.close()
    events = await handshakes(engine)
    assert [(e["pool"], e["server"]) for e in events] == [("other", "other/n1")]
    assert chat.accepted == 0
