"""The restart command the rolling-restart tests hand to examples/rolling-restart.sh, in place of
`systemctl restart app@{}`: stop node NAME by the PID in DIR/NAME.pid (SIGTERM, wait for the exit), start it
again on the port in DIR/NAME.port, and return once it listens (as `systemctl restart` does for a
Type=notify service). Exit 0 on success; 1 with one line on stderr otherwise.

    python tests/e2e/restart_node.py --dir DIR NAME
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NODE_SCRIPT = Path(__file__).with_name("sio_node.py")
STOP_S = 10.0
START_S = 20.0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def fail(message: str) -> int:
    print(f"restart_node: {message}", file=sys.stderr, flush=True)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description="stop and start one Socket.IO test node by its pid file")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("name")
    args = parser.parse_args()
    pid_file, port_file = args.dir / f"{args.name}.pid", args.dir / f"{args.name}.port"
    try:
        pid = int(pid_file.read_text().strip())
        port = int(port_file.read_text().strip())
    except (OSError, ValueError) as exc:
        return fail(f"{args.name}: no pid or port file in {args.dir} ({exc})")
    if alive(pid) and NODE_SCRIPT.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        while alive(pid):
            if time.monotonic() > deadline:
                return fail(f"{args.name} pid {pid} did not stop within {STOP_S:g} s")
            time.sleep(0.02)
    pid_file.unlink(missing_ok=True)
    log = (args.dir / f"{args.name}.log").open("ab")
    stats_file = args.dir / f"{args.name}.stats.jsonl"
    command = [
        sys.executable, str(NODE_SCRIPT), "--name", args.name, "--port", str(port),
        "--pid-file", str(pid_file), "--stats-file", str(stats_file),
    ]  # fmt: skip
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + START_S
    while not pid_file.exists():  # the node writes it once it listens
        if child.poll() is not None:
            return fail(f"{args.name} exited with status {child.returncode} before listening (see {log.name})")
        if time.monotonic() > deadline:
            return fail(f"{args.name} did not listen on port {port} within {START_S:g} s")
        time.sleep(0.02)
    print(f"{args.name} restarted: pid {child.pid} on port {port}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
