"""Files for the edge scenarios: one ECDSA P-256 certificate (trustme's default key type) for every proxy.

wsproxy gets the chain and the key, HAProxy one file with both (`bind ... ssl crt`), the load generators the CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "bench.test"


@dataclass(frozen=True)
class EdgeFiles:
    cert: Path
    key: Path
    combined: Path
    ca: Path


def make_edge_files(workdir: Path) -> EdgeFiles | None:
    """A CA and a leaf for SERVER_NAME in `workdir`; None when trustme is not installed (the test extra has it)."""
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()  # ECDSA P-256 keys
    leaf = ca.issue_cert(SERVER_NAME, "127.0.0.1")
    files = EdgeFiles(workdir / "edge.pem", workdir / "edge.key", workdir / "edge-haproxy.pem", workdir / "ca.pem")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    files.cert.write_bytes(chain)
    files.key.write_bytes(leaf.private_key_pem.bytes())
    files.combined.write_bytes(chain + leaf.private_key_pem.bytes())
    files.ca.write_bytes(ca.cert_pem.bytes())
    return files
