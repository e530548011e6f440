"""Readings from /proc: a process tree's CPU time and resident memory, and a core's busy time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def children(pid: int) -> list[int]:
    """Live descendants of pid (any depth), read from /proc/PID/task/*/children."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of one process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of pid plus its live descendants."""
    return cpu_seconds(pid) + sum(cpu_seconds(k) for k in children(pid))


def wait_seconds(pid: int) -> float:
    """Time the threads of pid spent runnable but waiting for a CPU (run-queue wait, /proc/PID/task/*/schedstat)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def tree_wait_seconds(pid: int) -> float:
    """Run-queue wait of pid plus its live descendants, in seconds."""
    return wait_seconds(pid) + sum(wait_seconds(k) for k in children(pid))


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """VmRSS of pid plus its live descendants, in KiB."""
    return rss_kib(pid) + sum(rss_kib(k) for k in children(pid))


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """Busy and total jiffies of one CPU from /proc/stat."""

    busy: int
    total: int

    @staticmethod
    def read(cpu: int) -> CoreTimes:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])  # guest time is already inside user/nice
                return CoreTimes(total - idle, total)
        raise ValueError(f"cpu{cpu} not in /proc/stat")

    def busy_since(self, before: CoreTimes) -> float:
        """Fraction of the interval the core was busy."""
        dt = self.total - before.total
        return (self.busy - before.busy) / dt if dt > 0 else 0.0


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT on this host, IPv4 and IPv6 (`tw` in /proc/net/sockstat*)."""
    total = 0
    for name in ("sockstat", "sockstat6"):
        try:
            text = Path(f"/proc/net/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("TCP:", "TCP6:")):
                fields = line.split()
                if "tw" in fields:
                    total += int(fields[fields.index("tw") + 1])
    return total
