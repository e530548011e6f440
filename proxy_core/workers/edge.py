"""The edge with `--workers`: counters reported by workers and summed, certificate reloads reaching every worker.

Each worker's Edge counts its own failed TLS handshakes, bad PROXY headers, refused sources and limit refusals;
`edge_report` puts them (cumulative, plain nested dicts of ints) into every report. The supervisor's
`WorkersEdge` sums the live reports plus those of dead workers, so `status()`, `/metrics` and the dashboard read
one engine, and it keeps its own copy of each TLS listener's certificates: a reload is validated there first,
then every worker loads the files for its new handshakes (`reload_listed`).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from proxy_core.config import EngineConfig
from proxy_core.datapath.edge import Edge
from proxy_core.datapath.switchboard import Switchboard
from proxy_core.datapath.tls import CertProblem, ListenerTls
from proxy_core.edgeconfig import ListenerConfig
from proxy_core.workers.handle import WorkerHandle

# Refused clients each worker reports: the top ones are what is shown, and with per-client limits a client
# always lands on one worker (workers/reuseport.py), so the merged top is exact.
TOP_REPORTED = 50
TOP_SHOWN = 10  # as the single engine's Admission.stats
RELOAD_TIMEOUT_S = 2.0  # a worker that does not answer in time is named in the result (a restart loads anew)
Counters = dict[str, Any]  # nested dicts whose leaves are ints


def edge_report(edge: Edge) -> Counters:
    """A worker's cumulative edge counters: per listener, and the limits' refusals (top clients only)."""
    listeners: Counters = {}
    for address, tls in edge.tls.items():
        listeners[address] = {"handshake_failures": tls.failures, "failures_by_reason": dict(tls.by_reason)}
    for address, intake in edge.intakes.items():
        listeners.setdefault(address, {}).update(
            refused_sources=intake.refused_sources, bad_headers=intake.bad_headers, by_reason=dict(intake.by_reason)
        )
    limits: Counters = {}
    admission = edge.board.admission
    if admission is not None:
        clients = admission.clients
        if clients is not None:
            limits["refused"] = clients.refused_total
            limits["by_reason"] = dict(clients.refused_by_reason)
            limits["clients"] = dict(clients.top_refused(TOP_REPORTED))
        limits["accept_pauses"] = admission.pacer.pauses if admission.pacer else 0
    return {"listeners": listeners, "limits": limits}


def worker_edge_config(config: EngineConfig, count: int) -> EngineConfig:
    """A worker's share of the limits: `max_accept_rate` is engine-wide, so each of `count` workers paces rate/N."""
    limits = config.limits
    if not limits.max_accept_rate:
        return config
    return replace(config, limits=replace(limits, max_accept_rate=limits.max_accept_rate / count))


def add_counters(acc: Counters, more: Counters) -> None:
    """Add `more` into `acc` key by key (ints summed, dicts merged recursively)."""
    for key, value in more.items():
        if isinstance(value, dict):
            add_counters(acc.setdefault(key, {}), value)
        else:
            acc[key] = acc.get(key, 0) + value


def reload_listed(edge: Edge, addresses: Iterable[str], now: float) -> list[dict[str, Any]]:
    """A worker's part of a reload: these listeners load their files again; a bad file keeps the old set."""
    results = []
    for address in addresses:
        tls = edge.tls.get(address)
        if tls is None:
            results.append({"listener": address, "ok": False, "detail": "not a TLS listener here"})
            continue
        try:
            tls.reload(now)
        except CertProblem as exc:
            results.append({"listener": address, "ok": False, "detail": str(exc)})
        else:
            results.append({"listener": address, "ok": True, "detail": ""})
    return results


class WorkersEdge(Edge):
    """The supervisor's edge: certificates for status and validation, counters summed from the workers."""

    def __init__(
        self,
        board: Switchboard,
        config: EngineConfig,
        listeners: Iterable[tuple[str, ListenerConfig]],
        live: Callable[[], list[WorkerHandle]],
    ) -> None:
        super().__init__(board, config)
        self.live = live
        now = time.time()
        for address, listen in listeners:
            self.kinds[address] = listen
            if listen.tls:  # checked by check_certificates before the workers started
                self.tls[address] = ListenerTls(address, listen.certificates, now)
        self.sums: Counters = {}
        self.retired: Counters = {}
        self._next_req = 0
        self._waiting: dict[int, dict[int, asyncio.Future[list[dict[str, Any]]]]] = {}

    # -- counters ----------------------------------------------------------------------------------

    def aggregate(self, reports: Iterable[dict[str, Any]]) -> None:
        """The engine's edge counters: dead workers' plus the latest report of each live one."""
        sums = copy.deepcopy(self.retired)
        for report in reports:
            add_counters(sums, report.get("edge", {}))
        self.sums = sums

    def retire(self, report: dict[str, Any] | None) -> None:
        """Keep a dead worker's last counters (counters only go up)."""
        if report is not None:
            add_counters(self.retired, report.get("edge", {}))

    def listener_status(self, address: str, now: float) -> dict[str, Any]:
        out = super().listener_status(address, now)
        counts = self.sums.get("listeners", {}).get(address, {})
        if out["tls"]:
            out["handshake_failures"] = counts.get("handshake_failures", 0)
            out["failures_by_reason"] = counts.get("failures_by_reason", {})
        if out["proxy_protocol"]:
            out.update(
                refused_sources=counts.get("refused_sources", 0),
                bad_headers=counts.get("bad_headers", 0),
                by_reason=counts.get("by_reason", {}),
            )
        return out

    def limits_status(self) -> dict[str, Any]:
        limits = self.config.limits
        if not (limits.per_client or limits.max_accept_rate):
            return {"refused": 0, "top_refused": []}
        sums = self.sums.get("limits", {})
        top = heapq.nlargest(TOP_SHOWN, sums.get("clients", {}).items(), key=lambda item: item[1])
        base = self.board.admission.stats() if self.board.admission is not None else {}
        return {
            "refused": sums.get("refused", 0),
            "by_reason": {**base.get("by_reason", {}), **sums.get("by_reason", {})},
            "top_refused": [{"client": ip, "refused": n} for ip, n in top],
            "accept_pauses": sums.get("accept_pauses", 0),
        }

    # -- reloads -----------------------------------------------------------------------------------

    async def reload_all(self) -> list[dict[str, Any]]:
        """Validate every TLS listener's new files here; those that load are then loaded by every worker."""
        results = self.reload_certs()  # a bad file raises nothing: it is a result, and the old set stays
        good = [r["listener"] for r in results if r["ok"]]
        if not good:
            return results
        answers = await self._ask_workers(good)
        for result in results:
            if not result["ok"]:
                continue
            problems = []
            for index, answer in sorted(answers.items()):
                if answer is None:
                    problems.append(f"worker {index} did not answer (it loads the files when it restarts)")
                    continue
                for item in answer:
                    if item["listener"] == result["listener"] and not item["ok"]:
                        problems.append(f"worker {index}: {item['detail']}")
            if problems:
                result.update(ok=False, detail=f"{result['detail']}; but {'; '.join(problems)}")
            else:
                result["detail"] += f"; in {len(answers)} worker(s)"
        return results

    async def _ask_workers(self, addresses: list[str]) -> dict[int, list[dict[str, Any]] | None]:
        self._next_req += 1
        req = self._next_req
        loop = asyncio.get_running_loop()
        futures = {handle.index: loop.create_future() for handle in self.live()}
        self._waiting[req] = futures
        for handle in self.live():
            handle.link.send({"t": "reload_certs", "req": req, "listeners": addresses})
        try:
            if futures:
                await asyncio.wait(futures.values(), timeout=RELOAD_TIMEOUT_S)
        finally:
            del self._waiting[req]
        return {index: f.result() if f.done() else None for index, f in futures.items()}

    def reloaded(self, index: int, message: dict[str, Any]) -> None:
        """A worker's answer to a reload request."""
        future = self._waiting.get(message.get("req", 0), {}).get(index)
        if future is not None and not future.done():
            future.set_result(list(message.get("results", [])))
