"""The reuseport program: run by a small classic-BPF interpreter over IPv4 and IPv6 headers, a client's socket
index is its source address modulo the worker count; only limited, non-PROXY listeners get it."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from proxy_core.edgeconfig import LimitsConfig, ListenerConfig
from proxy_core.workers import reuseport
from proxy_core.workers.reuseport import SKF_NET_OFF, client_program, encode, wanted


def run(program: list[tuple[int, int, int, int]], header: bytes) -> int:
    """Interpret the opcodes the program uses, loads relative to the network header as the kernel does."""
    a, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == reuseport.LD_B_ABS:
            a = header[k - SKF_NET_OFF]
        elif code == reuseport.LD_W_ABS:
            (a,) = struct.unpack_from("!I", header, k - SKF_NET_OFF)
        elif code == reuseport.ALU_RSH_K:
            a >>= k
        elif code == reuseport.ALU_MOD_K:
            a %= k
        elif code == reuseport.JMP_JEQ_K:
            pc += jt if a == k else jf
        elif code == reuseport.JMP_JA:
            pc += k
        elif code == reuseport.RET_A:
            return a
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def ipv4(source: str) -> bytes:
    return bytes([0x45, 0, 0, 60]) + bytes(8) + ipaddress.IPv4Address(source).packed + bytes(4) + bytes(20)


def ipv6(source: str) -> bytes:
    return bytes([0x60, 0, 0, 0]) + bytes(4) + ipaddress.IPv6Address(source).packed + bytes(16) + bytes(20)


@pytest.mark.parametrize(
    ("header", "count", "index"),
    [
        (ipv4("127.0.0.2"), 2, 0),
        (ipv4("127.0.0.3"), 2, 1),
        (ipv4("10.0.0.7"), 3, 0x0A000007 % 3),
        (ipv4("203.0.113.255"), 4, 3),
        (ipv6("2001:db8::5"), 2, 1),
        (ipv6("2001:db8::1:0:7"), 3, 7 % 3),  # the low 32 bits only
        (ipv6("::ffff:127.0.0.3"), 2, 1),
    ],
)
def test_socket_index_is_the_source_modulo_the_workers(header: bytes, count: int, index: int) -> None:
    """IPv4 takes the whole source address, IPv6 its low 32 bits; always below the count (never the hash)."""
    assert run(client_program(count), header) == index


def test_encoded_as_struct_sock_filter() -> None:
    """Eight bytes per instruction, negative offsets as the kernel's unsigned k."""
    code = encode(client_program(2))
    assert len(code) == 8 * len(client_program(2))
    assert struct.unpack_from("=HBBI", code, 0) == (reuseport.LD_B_ABS, 0, 0, SKF_NET_OFF & 0xFFFFFFFF)


@pytest.mark.parametrize(
    ("listen", "limits", "expected"),
    [
        (ListenerConfig("0.0.0.0", 80), LimitsConfig(max_conns_per_client=3), True),
        (ListenerConfig("0.0.0.0", 80), LimitsConfig(new_conns_per_client_per_s=5), True),
        (ListenerConfig("0.0.0.0", 80), LimitsConfig(max_accept_rate=100), False),
        (ListenerConfig("0.0.0.0", 80), LimitsConfig(), False),
        (ListenerConfig("0.0.0.0", 80, proxy_protocol=True), LimitsConfig(max_conns_per_client=3), False),
    ],
)
def test_only_limited_listeners_seeing_the_client(listen: ListenerConfig, limits: LimitsConfig, expected: bool) -> None:
    """No program (and no cost) without a per-client limit, nor where the source is a PROXY-protocol balancer."""
    assert wanted(listen, limits) is expected
