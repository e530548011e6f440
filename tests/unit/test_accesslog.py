"""Access log batching: whole JSON lines per write, a flush at 64 KiB or on demand, failures counted not raised."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from proxy_core.datapath import accesslog
from proxy_core.datapath.accesslog import AccessLog


def record(i: int) -> dict[str, Any]:
    return {"type": "close", "conn": i, "client": "127.0.0.1:5000", "reason": "client closed", "latency_ms": 0.25}


def test_lines_wait_for_a_flush_then_arrive_whole(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    log = AccessLog.open(str(path))
    try:
        for i in range(3):
            log.write(record(i))
        assert path.read_bytes() == b""  # batched: nothing written per connection
        log.flush()
        lines = path.read_text().splitlines()
        assert [json.loads(line)["conn"] for line in lines] == [0, 1, 2]
        assert log.lines_written == 3
    finally:
        log.close()


def test_a_full_buffer_is_written_without_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accesslog, "BUFFER_BYTES", 1000)
    path = tmp_path / "access.jsonl"
    log = AccessLog.open(str(path))
    try:
        i = 0
        while not path.read_bytes():
            log.write(record(i))
            i += 1
            assert i < 100, "the buffer never flushed"
        data = path.read_bytes()
        assert data.endswith(b"\n") and len(data) >= 1000
        assert all(json.loads(line) for line in data.splitlines())
    finally:
        log.close()


def test_close_flushes_and_appends_to_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    path.write_text('{"earlier": true}\n')
    log = AccessLog.open(str(path))
    log.write(record(7))
    log.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": True} and json.loads(lines[1])["conn"] == 7


def test_a_failed_write_is_counted_and_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # writing now fails with EPIPE (Python ignores SIGPIPE)
    log = AccessLog(write_end, owned=True, name="a closed pipe")
    try:
        log.write(record(1))
        log.write(record(2))
        log.flush()
        log.write(record(3))
        log.flush()
    finally:
        log.close()
    assert log.lines_dropped == 3 and log.lines_written == 0
    err = capsys.readouterr().err
    assert err.count("access log a closed pipe: write failed") == 1  # reported once per interval, not per batch


def test_an_unopenable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AccessLog.open(str(tmp_path / "no-such-dir" / "access.jsonl"))
