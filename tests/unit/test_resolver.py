"""Host resolution rules: IP literals pass as they are, the hosts-file override is parsed like hosts(5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy_core.resolver import HOSTS_FILE_ENV, Unresolvable, is_ip, parse_hosts, resolve


@pytest.mark.parametrize(
    ("host", "ip"),
    [("127.0.0.1", True), ("::1", True), ("fe80::1%eth0", True), ("node1", False), ("10.0.0", False), ("", False)],
)
def test_is_ip(host: str, ip: bool) -> None:
    """Only an IPv4 or IPv6 literal skips the lookup."""
    assert is_ip(host) is ip


def test_parse_hosts() -> None:
    """`ADDRESS NAME [ALIAS...]` lines; comments, blank and malformed lines ignored; first line wins; any case."""
    text = "# comment\n127.0.0.2 node1 n1 # trailing\n\nnot-an-ip node2\n127.0.0.3 NODE1\n::1 six\nlonely\n"
    assert parse_hosts(text) == {"node1": "127.0.0.2", "n1": "127.0.0.2", "six": "::1"}


def test_hosts_file_override_is_read_at_each_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the stub set, a name it does not list fails (no DNS asked), and resolves once the file lists it."""
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    monkeypatch.setenv(HOSTS_FILE_ENV, str(hosts))
    with pytest.raises(Unresolvable, match=r"cannot resolve later\.invalid"):
        asyncio.run(resolve("later.invalid"))
    hosts.write_text("127.0.0.9 later.invalid\n")
    assert asyncio.run(resolve("Later.Invalid")) == "127.0.0.9"
    assert asyncio.run(resolve("127.0.0.1")) == "127.0.0.1"


def test_hosts_file_stub_unreadable_is_unresolvable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub file that is missing makes every name unresolvable, with the file named in the detail."""
    monkeypatch.setenv(HOSTS_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(Unresolvable) as info:
        asyncio.run(resolve("localhost"))
    assert "missing" in info.value.detail and str(info.value) == "cannot resolve localhost"
