"""docs/migrating.md and examples/ say what the engine accepts: every TOML block and `wsproxy serve` command in
the guide parses, the flags and the file of the seed's setup give the same settings, and the systemd unit holds."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proxy_core.cli.main import build_parser
from proxy_core.config import EngineConfig, load_file, parse_config
from proxy_core.flags import build_config
from tests.conftest import ROOT, unit

GUIDE = ROOT / "docs" / "migrating.md"
README = ROOT / "README.md"
EXAMPLE_TOML = ROOT / "examples" / "wsproxy.toml"
UNIT = ROOT / "examples" / "wsproxy.service"
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(lang: str, doc: Path = GUIDE) -> list[str]:
    return [m["body"] for m in FENCE.finditer(doc.read_text(encoding="utf-8")) if m["lang"] == lang]


def serve_commands() -> list[list[str]]:
    """Every `wsproxy serve ...` command of the guide's shell blocks, continuation lines joined, as argv."""
    out = []
    for body in blocks("sh"):
        for command in body.replace("\\\n", " ").splitlines():
            words = shlex.split(command)
            if words[:2] == ["wsproxy", "serve"]:
                out.append(words[1:])
    return out


def essentials(config: EngineConfig) -> tuple[object, ...]:
    """What the seed's setup decides: listeners, policy, checks, servers, nodelay, status page."""
    return (
        config.listen,
        config.balance,
        config.check,
        config.servers,
        config.tcp_nodelay,
        config.control.status_listen,
    )


@pytest.mark.parametrize("doc", [GUIDE, README], ids=["migrating", "readme"])
def test_doc_toml_blocks_are_valid(doc: Path) -> None:
    """Every TOML block in docs/migrating.md and the README is a configuration the engine accepts."""
    found = blocks("toml", doc)
    assert len(found) >= 3
    for body in found:
        parse_config(tomllib.loads(body))


def test_guide_flags_match_the_files() -> None:
    """The guide's `wsproxy serve` flags, its seed TOML and examples/wsproxy.toml give the same settings."""
    commands = serve_commands()
    assert commands, "no `wsproxy serve` command in the guide"
    from_flags = build_config(build_parser().parse_args(commands[0]))
    from_example = load_file(str(EXAMPLE_TOML))
    from_guide = parse_config(tomllib.loads(blocks("toml")[0]))
    assert essentials(from_flags) == essentials(from_example) == essentials(from_guide)
    assert from_example.check.interval_ms == 3000 and from_example.check.fall == 5
    assert from_example.control.status_listen == "0.0.0.0:9000"


def test_systemd_unit() -> None:
    """examples/wsproxy.service stops gracefully, puts the socket in the runtime directory and verifies clean."""
    text = UNIT.read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")
    )
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["RuntimeDirectory"] == "wsproxy"
    assert "Environment=WSPROXY_CONTROL=%t/wsproxy/control.sock" in text
    timeouts = load_file(str(EXAMPLE_TOML)).timeouts
    # SIGTERM: grace for live connections, then the rest closed over at most 2 s (engine.shutdown), plus a margin.
    assert float(settings["TimeoutStopSec"]) > timeouts.shutdown_grace + min(timeouts.drain_spread, 2.0) + 1.0
    command = shlex.split(settings["ExecStart"])
    assert command[0].endswith("/wsproxy")
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve" and args.config == "/etc/wsproxy/wsproxy.toml"
    assert "wsproxy-tui --attach /run/wsproxy/control.sock" in GUIDE.read_text(encoding="utf-8")


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` has nothing to say about examples/wsproxy.service (skipped without systemd)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit_copy = tmp_path / "wsproxy.service"  # ExecStart must name an existing executable
    unit_copy.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/wsproxy/.venv/bin/wsproxy", sys.executable))
    result = subprocess.run(
        [analyze, "verify", str(unit_copy)], capture_output=True, text=True, timeout=unit(30.0), check=False
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
