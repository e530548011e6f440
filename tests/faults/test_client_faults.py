"""Fault matrix, client side: oversized heads, descriptor exhaustion, event subscribers that stall or die."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
from typing import Any

import pytest

from proxy_core.datapath.sniffer import HEAD_LIMIT
from tests.conftest import EngineFactory, EngineProc, child_env, unit, wait_until
from tests.integration.tcp_peers import TcpServer, cpu_seconds, echo, read_exactly, rss_kib


def head_of_size(size: int) -> bytes:
    """A valid request head of exactly `size` bytes, terminating blank line included."""
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


async def test_head_cap_at_limit_minus_one_limit_and_plus_one(start_engine: EngineFactory) -> None:
    """Heads of HEAD_LIMIT-1 and HEAD_LIMIT bytes are proxied; HEAD_LIMIT+1 is refused (closed)."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        for size, proxied in ((HEAD_LIMIT - 1, True), (HEAD_LIMIT, True), (HEAD_LIMIT + 1, False)):
            head = head_of_size(size)
            assert len(head) == size
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            writer.write(head)
            if proxied:
                assert await read_exactly(reader, size) == head
                writer.close()
            else:
                got = await asyncio.wait_for(_read_until_closed(reader), unit(2))
                assert len(got) < size, f"a {size}-byte head was echoed whole"
                writer.close()
        async with engine.client() as client:
            events = (await client.events(0))["events"]
        refused = [e for e in events if e["type"] == "close" and "head over" in e["reason"]]
        assert len(refused) == 1
    finally:
        await backend.stop()


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Read to EOF; a reset or broken pipe (the engine closed while we were still writing) also means closed."""
    try:
        return await reader.read()
    except ConnectionError:
        return b""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_one_mebibyte_head_refused_memory_flat(start_engine: EngineFactory) -> None:
    """A 1 MiB request head is refused once it passes the cap and the engine's memory stays flat."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        before = rss_kib(engine.pid)
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * (1 << 20))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.wait_for(_read_until_closed(reader), unit(2))
            writer.close()
        assert rss_kib(engine.pid) - before < 4 * 1024
    finally:
        await backend.stop()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
async def test_descriptor_exhaustion_backs_off_without_spinning(start_engine: EngineFactory, tmp_path: Any) -> None:
    """Under `prlimit --nofile=64` with 100 clients: no spin, an existing connection echoes, the control API
    answers, the log has a handful of lines, and new connections are accepted again after the clients leave."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await _start_limited(start_engine, backend, tmp_path)
        early_reader, early = await asyncio.open_connection("127.0.0.1", engine.port)
        early.write(b"\x00early")
        assert await read_exactly(early_reader, 6) == b"\x00early"
        crowd = []
        for _ in range(100):
            crowd.append(socket.create_connection(("127.0.0.1", engine.port), timeout=unit(2)))
        totals = await wait_until(lambda: _paused(engine), what="the engine to stop accepting")
        assert totals["max_clients"] < 100
        cpu_before = cpu_seconds(engine.pid)
        await asyncio.sleep(1.0)  # measuring: CPU over one second while at the cap
        assert cpu_seconds(engine.pid) - cpu_before < 0.2, "the accept loop spins at the cap"
        early.write(b"\x00still")
        assert await read_exactly(early_reader, 6) == b"\x00still"
        for sock in crowd:
            sock.close()
        await wait_until(lambda: _accepting(engine), what="accepting again")
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        writer.write(b"\x00after")
        assert await read_exactly(reader, 6) == b"\x00after"
        writer.close()
        early.close()
        cap_lines = [line for line in engine.stderr_lines if "connection cap" in line]
        assert 1 <= len(cap_lines) <= 5, engine.stderr_lines
    finally:
        await backend.stop()


async def _start_limited(start_engine: EngineFactory, backend: TcpServer, tmp_path: Any) -> EngineProc:
    """An engine whose descriptor limit (soft and hard) is 64."""
    wrapper = tmp_path / "limited-python"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile=64 {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    original = sys.executable
    sys.executable = str(wrapper)  # the start_engine fixture runs sys.executable
    try:
        return await start_engine("--backend", backend.flag, "--check", "none")
    finally:
        sys.executable = original


async def _paused(engine: EngineProc) -> dict[str, Any] | None:
    async with engine.client() as client:
        totals = (await client.status())["totals"]
    return totals if not totals["accepting"] else None


async def _accepting(engine: EngineProc) -> bool:
    async with engine.client() as client:
        return bool((await client.status())["totals"]["accepting"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_killed_event_subscriber_does_not_disturb_traffic(start_engine: EngineFactory) -> None:
    """An event-stream subscriber killed mid-stream: relayed traffic goes on, the engine drops it, memory flat."""
    backend = await TcpServer(echo, "e").start()
    try:
        engine = await start_engine("--backend", backend.flag, "--check", "none")
        follower = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy_core", "events", "--follow", "--control", engine.control,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=child_env(),
        )  # fmt: skip
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
            for i in range(200):
                writer.write(b"\x00%03d" % i)
                assert await read_exactly(reader, 4) == b"\x00%03d" % i
                if i == 100:
                    follower.send_signal(signal.SIGKILL)
            writer.close()
            before = rss_kib(engine.pid)
            for _ in range(500):
                r, w = await asyncio.open_connection("127.0.0.1", engine.port)
                w.write(b"\x00x")
                await read_exactly(r, 2)
                w.close()
            assert rss_kib(engine.pid) - before < 4 * 1024
        finally:
            with contextlib.suppress(ProcessLookupError):
                follower.kill()
            await follower.wait()
    finally:
        await backend.stop()
