"""One client, one worker: the supervisor's listening sockets and the classic BPF program that picks among them.

SO_REUSEPORT alone spreads a client's connections over the workers by 4-tuple hash, so per-client limits would
be per worker. With per-client limits the supervisor itself opens one listening socket per worker for each
listener (in worker order) and attaches a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) that returns
`source address % N` as the socket index: every connection of a client lands on the same worker, on every
listener, so each worker's count of a client is the engine's. Kernel semantics (net/core/sock_reuseport.c): TCP
sockets are numbered in the order of their listen(); an index out of range falls back to the hash; a socket that
closes is replaced by the group's last one. The supervisor keeps its copies open, so a worker that dies never
reorders the group: its socket keeps queueing new connections until the restarted worker takes it over.
PROXY-protocol listeners are left to the hash (the source there is the balancer, not the client).
"""

from __future__ import annotations

import ctypes
import socket
import struct

from proxy_core.edgeconfig import LimitsConfig, ListenerConfig

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # Linux >= 4.5
BACKLOG = 1024  # as proxy_core.datapath.listener.BACKLOG
SKF_NET_OFF = -0x100000  # classic BPF loads relative to the network header (the data starts past TCP)
IPV4_SOURCE = 12  # offset of the source address in the IPv4 header
IPV6_SOURCE_LOW = 20  # the low 32 bits of the IPv6 source address (8 + 12)
# Classic BPF opcodes (linux/filter.h): class | size | mode, and for ALU/JMP class | op | source.
LD_B_ABS, LD_W_ABS = 0x30, 0x20
ALU_RSH_K, ALU_MOD_K = 0x74, 0x94
JMP_JEQ_K, JMP_JA = 0x15, 0x05
RET_A = 0x16
INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


def wanted(listen: ListenerConfig, limits: LimitsConfig) -> bool:
    """Only listeners whose clients are limited, and that see the client's own address, pay for the program."""
    return limits.per_client and not listen.proxy_protocol


def client_program(count: int) -> list[tuple[int, int, int, int]]:
    """The instructions: A = IPv4 source (or the IPv6 source's low 32 bits); return A % count."""
    return [
        (LD_B_ABS, 0, 0, SKF_NET_OFF),  # A = first byte of the IP header
        (ALU_RSH_K, 0, 0, 4),  # A = IP version
        (JMP_JEQ_K, 0, 2, 6),  # IPv6: next; else skip two
        (LD_W_ABS, 0, 0, SKF_NET_OFF + IPV6_SOURCE_LOW),
        (JMP_JA, 0, 0, 1),
        (LD_W_ABS, 0, 0, SKF_NET_OFF + IPV4_SOURCE),
        (ALU_MOD_K, 0, 0, count),
        (RET_A, 0, 0, 0),
    ]


def encode(program: list[tuple[int, int, int, int]]) -> bytes:
    return b"".join(INSTRUCTION.pack(code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in program)


def attach(sock: socket.socket, count: int) -> None:
    """Attach the program to the socket's reuseport group (all its sockets use it); raises OSError."""
    code = encode(client_program(count))
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // INSTRUCTION.size, ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def open_group(listen: ListenerConfig, count: int) -> list[socket.socket]:
    """`count` listening sockets on the listener's (resolved) address, listened in worker order, program attached."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        attach(group[0], count)
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group


class HeldListeners:
    """The supervisor's listening sockets, by listener index then worker index; passed to each worker at start."""

    def __init__(self) -> None:
        self.groups: dict[int, list[socket.socket]] = {}

    def open(self, listeners: list[ListenerConfig], limits: LimitsConfig, count: int) -> None:
        """Open the groups of the listeners that want one; OSError names nothing (the caller words it)."""
        for index, listen in enumerate(listeners):
            if wanted(listen, limits):
                self.groups[index] = open_group(listen, count)

    def fds(self, worker: int) -> dict[str, int]:
        """The worker's socket of each held listener: {listener index: fd} (fd numbers survive pass_fds)."""
        return {str(index): group[worker].fileno() for index, group in self.groups.items()}

    def close(self) -> None:
        """Stop queueing new connections (workers close their own copies when they stop accepting)."""
        for group in self.groups.values():
            for sock in group:
                sock.close()
        self.groups.clear()
