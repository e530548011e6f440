"""TLS termination with real sockets: wss:// through the engine, SNI, reloads under live connections, bad
certificates at start, failed handshakes counted and summarised, and TLS to a server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect

from tests.conftest import EchoBackend, EngineFactory, EngineProc, unit, wait_until

pytestmark = pytest.mark.asyncio


def _write(path: Path, leaf: trustme.LeafCert) -> tuple[Path, Path]:
    cert, key = path.with_suffix(".pem"), path.with_suffix(".key")
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return cert, key


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _peer_names(port: int, ca: trustme.CA, server_hostname: str | None) -> tuple[str, str, str]:
    """Connect with this SNI; the certificate's DNS names, the TLS version and the ALPN protocol."""
    context = _client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if server_hostname is None:
        context.check_hostname = False
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname), unit(5)
    )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        cert = sslobj.getpeercert()
        names = " ".join(value for _, value in cert["subjectAltName"])
        return names, sslobj.version(), sslobj.selected_alpn_protocol()
    finally:
        writer.close()


async def _tls_engine(
    start_engine: EngineFactory, tmp_path: Path, backend: EchoBackend, *pairs: tuple[Path, Path], extra: str = ""
) -> EngineProc:
    certs = "\n".join(f'[[listener.certificate]]\ncert = "{c}"\nkey = "{k}"' for c, k in pairs[1:])
    config = tmp_path / "wsproxy.toml"
    first = f'tls_cert = "{pairs[0][0]}"\ntls_key = "{pairs[0][1]}"'
    config.write_text(f'[[listener]]\naddress = "127.0.0.1:0"\n{first}\n{certs}\n{extra}')
    return await start_engine("-c", str(config), "--backend", backend.flag, "--access-log", "access.jsonl", listen=None)


async def test_wss_client_through_the_tls_listener_and_tls_details_in_the_logs(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """A websockets client speaks wss:// to the engine (trustme CA); the handshake and access logs carry TLS."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    pair = _write(tmp_path / "a", ca.issue_cert("a.test"))
    engine = await _tls_engine(start_engine, tmp_path, backend, pair)
    async with connect(
        f"wss://a.test:{engine.port}/ws", ssl=_client_context(ca), host="127.0.0.1", open_timeout=unit(5)
    ) as ws:
        await ws.send("over tls")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "over tls"
    async with engine.client() as client:
        events = await wait_until(lambda: _handshakes(client), what="the handshake record of the wss connection")
        status = await client.status()
    tls = events[0]["tls"]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["sni"] == "a.test" and tls["cipher"]
    assert events[0]["status"] == 101
    listener = status["listeners"][0]
    assert listener["tls"] is True and "a.test" in listener["names"] and listener["days_left"] > 300
    access = await wait_until(lambda: (tmp_path / "access.jsonl").exists() and (tmp_path / "access.jsonl").read_text())
    assert '"sni":"a.test"' in access.replace(" ", "")


async def test_a_wss_close_reaches_the_client_at_once(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """The backend's close after the closing handshake reaches a wss client as close_notify at once (TLS has no
    half-close to pass on), instead of the client waiting out its close timeout for the TCP close."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _tls_engine(start_engine, tmp_path, backend, _write(tmp_path / "a", ca.issue_cert("a.test")))
    close_timeout = unit(10)
    async with connect(
        f"wss://a.test:{engine.port}/ws", ssl=_client_context(ca), host="127.0.0.1", close_timeout=close_timeout
    ) as ws:
        await ws.send("bye")
        assert await asyncio.wait_for(ws.recv(), unit(5)) == "bye"
        started = asyncio.get_running_loop().time()
    took = asyncio.get_running_loop().time() - started
    assert took < close_timeout / 4, f"the close took {took:.2f} s: the TCP close never came, the client gave up"
    async with engine.client() as client:
        events = await wait_until(lambda: _closes(client), what="the close record of the wss connection")
    assert events[0]["closed_by"] == "server"


async def _closes(client: object) -> list[dict[str, object]]:
    events = (await client.events())["events"]  # type: ignore[attr-defined]
    return [e for e in events if e["type"] == "close"]


async def _handshakes(client: object) -> list[dict[str, object]]:
    events = (await client.events())["events"]  # type: ignore[attr-defined]
    return [e for e in events if e["type"] == "handshake"]


async def test_sni_picks_the_certificate_of_two_and_offers_http11_only(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """The client's SNI chooses between two certificates; no SNI (or an unknown name) gets the first; ALPN http/1.1."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    a = _write(tmp_path / "a", ca.issue_cert("a.test"))
    b = _write(tmp_path / "b", ca.issue_cert("b.test", "*.b.test"))
    engine = await _tls_engine(start_engine, tmp_path, backend, a, b)
    assert (await _peer_names(engine.port, ca, "b.test"))[0] == "b.test *.b.test"
    assert (await _peer_names(engine.port, ca, "x.b.test"))[0] == "b.test *.b.test"
    names, version, alpn = await _peer_names(engine.port, ca, "a.test")
    assert names == "a.test" and version == "TLSv1.3" and alpn == "http/1.1"
    assert (await _peer_names(engine.port, ca, None))[0] == "a.test"


async def test_tls12_is_accepted_and_tls11_refused_and_counted(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """TLS 1.2 handshakes; a TLS 1.1-only client and plaintext are refused, counted per listener and in /metrics."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    engine = await _tls_engine(start_engine, tmp_path, backend, _write(tmp_path / "a", ca.issue_cert("a.test")))
    context = _client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", engine.port, ssl=context, server_hostname="a.test")
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    old = _client_context(ca)
    with warnings.catch_warnings():  # the point is to try a deprecated version
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", engine.port, ssl=old, server_hostname="a.test")
    for _ in range(20):  # plaintext on the TLS port, 20 times: counted, summarised, not 20 log lines
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(reader.read(), unit(5))
        writer.close()
    async with engine.client() as client:

        async def failures() -> dict[str, object] | None:
            listener = (await client.status())["listeners"][0]
            return listener if listener["handshake_failures"] >= 21 else None

        listener = await wait_until(failures, what="21 failed handshakes counted")
        metrics = (await client._http.get("/metrics")).text
    assert listener["failures_by_reason"]["plaintext HTTP on a TLS port"] == 20
    assert sum(listener["failures_by_reason"].values()) == listener["handshake_failures"]
    assert f'wsproxy_listener_tls_handshake_failures_total{{listener="127.0.0.1:{engine.port}"}} 21.0' in metrics
    summaries = [line for line in engine.stderr_lines if "failed TLS handshakes" in line]
    assert 1 <= len(summaries) <= 3, engine.output()


async def test_reload_under_live_connections(
    start_engine: EngineFactory,
    echo_backends: Callable[..., object],
    tmp_path: Path,
    ca: trustme.CA,
    wsproxy_cli: Callable[..., object],
) -> None:
    """reload-certs and SIGHUP serve new files to new handshakes; live connections keep going; a bad file is refused."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    cert, key = _write(tmp_path / "a", ca.issue_cert("a.test", "old.test"))
    engine = await _tls_engine(start_engine, tmp_path, backend, (cert, key))
    live = await connect(f"wss://a.test:{engine.port}/ws", ssl=_client_context(ca), host="127.0.0.1")
    try:
        _write(tmp_path / "a", ca.issue_cert("a.test", "new.test"))
        result = await wsproxy_cli("reload-certs", "--control", engine.control)  # type: ignore[operator]
        assert result.code == 0 and "loaded 1 certificate" in result.out, result
        context = _client_context(ca)
        _, writer = await asyncio.open_connection("127.0.0.1", engine.port, ssl=context, server_hostname="a.test")
        names = [v for k, v in writer.get_extra_info("peercert")["subjectAltName"]]
        writer.close()
        assert "new.test" in names
        await live.send("still here")
        assert await asyncio.wait_for(live.recv(), unit(5)) == "still here"
        cert.write_text("not a certificate\n")
        result = await wsproxy_cli("reload-certs", "--control", engine.control)  # type: ignore[operator]
        assert result.code == 1 and "is not a PEM certificate" in result.err and str(cert) in result.err
        assert "new.test" in (await _peer_names(engine.port, ca, "a.test"))[0]  # the last good set still serves
        _write(tmp_path / "a", ca.issue_cert("a.test", "hup.test"))
        os.kill(engine.pid, signal.SIGHUP)
        await engine.wait_line("SIGHUP", 5)
        _, writer = await asyncio.open_connection("127.0.0.1", engine.port, ssl=context, server_hostname="a.test")
        assert "hup.test" in [v for k, v in writer.get_extra_info("peercert")["subjectAltName"]]
        writer.close()
        await live.send("after two reloads")
        assert await asyncio.wait_for(live.recv(), unit(5)) == "after two reloads"
    finally:
        await live.close()


def _bad_cases(tmp_path: Path, ca: trustme.CA) -> list[tuple[str, str, str]]:
    good_cert, good_key = _write(tmp_path / "good", ca.issue_cert("a.test"))
    _, other_key = _write(tmp_path / "other", ca.issue_cert("b.test"))
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    expired_cert, expired_key = _write(
        tmp_path / "expired", ca.issue_cert("a.test", not_before=past - datetime.timedelta(days=30), not_after=past)
    )
    (tmp_path / "dir.pem").mkdir()
    return [
        (f"{tmp_path}/missing.pem", str(good_key), "cannot be read (No such file or directory)"),
        (f"{tmp_path}/dir.pem", str(good_key), "cannot be read (Is a directory)"),
        (str(good_cert), f"{tmp_path}/missing.key", "cannot be read (No such file or directory)"),
        (str(good_cert), str(other_key), "does not match the certificate"),
        (str(expired_cert), str(expired_key), "expired on"),
        (str(good_key), str(good_key), "is not a PEM certificate"),
    ]


async def test_bad_certificates_stop_the_start_with_exit_2(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """Missing, unreadable, mismatched, expired and non-PEM files: exit 2 naming the file and the problem."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    for cert, key, problem in _bad_cases(tmp_path, ca):
        engine = await start_engine(
            "--listen", f"127.0.0.1:0,cert={cert},key={key}", "--backend", backend.flag, listen=None, wait=False
        )
        assert await engine.wait_exit(unit(10)) == 2, engine.output()
        message = "\n".join(engine.stderr_lines)
        named = key if "key" in problem or "match" in problem or key.endswith("missing.key") else cert
        assert problem in message and named in message, (problem, message)


async def test_tls_to_a_server(start_engine: EngineFactory, tmp_path: Path, ca: trustme.CA) -> None:
    """`tls = true` with `tls_ca`: the engine speaks TLS to the server and checks it over TLS too."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("backend.test").configure_cert(server_context)
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        seen.append(data)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        engine = await start_engine(
            "--backend", f"b1=127.0.0.1:{port},tls,tls_ca={ca_file},tls_sni=backend.test", "--no-handshake-log"
        )
        await wait_until(lambda: len(seen) >= 1, what="a TLS check reaching the server")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(), unit(5)) == b"echo:hello"
        writer.close()
        async with engine.client() as client:
            assert (await client.status())["servers"][0]["state"] == "up"
    finally:
        server.close()


async def test_a_slow_handshake_is_closed_at_the_head_deadline_and_counted(
    start_engine: EngineFactory, echo_backends: Callable[..., object], tmp_path: Path, ca: trustme.CA
) -> None:
    """A client that starts no TLS handshake (or only half of one) is closed at `timeouts.head` and counted as
    a "timeout" failure; one that connects and leaves at once is not a timeout."""
    (backend,) = await echo_backends(1)  # type: ignore[operator]
    pair = _write(tmp_path / "a", ca.issue_cert("a.test"))
    engine = await _tls_engine(start_engine, tmp_path, backend, pair, extra="[timeouts]\nhead = 0.5\n")
    await slow_handshakes(engine.port, engine)


async def slow_handshakes(port: int, engine: EngineProc, listener: int = 0) -> None:
    """Two silent clients and a half ClientHello are closed near the deadline (0.5 s); two quick leavers before
    them are not counted; the status says 3 failed handshakes, all "timeout" (shared with the --workers test)."""
    for _ in range(2):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    slow[2][1].write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    started = asyncio.get_running_loop().time()
    for reader, _ in slow:
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), unit(5)) == b""
    elapsed = asyncio.get_running_loop().time() - started
    assert 0.3 <= elapsed < unit(2.0), elapsed
    async with engine.client() as client:

        async def counted() -> dict[str, object] | None:
            item: dict[str, object] = (await client.status())["listeners"][listener]
            return item if item["handshake_failures"] >= 3 else None

        # The quick leavers came first: their deadline passed before the slow ones were closed and counted.
        item = await wait_until(counted, what="3 handshake timeouts counted")
    assert item["handshake_failures"] == 3 and item["failures_by_reason"] == {"timeout": 3}, item
