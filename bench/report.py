"""Plain-text tables of the results: one block per scenario, then the CPU-per-unit comparison."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from scenarios import Scenario, Settings

Results = dict[str, dict[str, dict[str, Any] | None]]  # scenario key -> column -> figures (None: not run)
RATIO_KEYS = {
    "rate",
    "p50",
    "p99",
    "p999",
    "cpu",
    "rss",
    "rate_plain",
    "cpu_plain",
}  # rows where wsproxy/HAProxy means something
RATIOS = [
    ("wsproxy", "haproxy", "ws/hap"),
    ("wsproxy+feat", "haproxy", "feat/hap"),
    ("floor", "haproxy", "floor/hap"),  # the least a relay on uvloop costs against HAProxy (floor_proxy.py)
    ("wsproxy+feat", "floor", "feat/floor"),  # wsproxy's own work with features on, over that floor
]
NOISE_PCT = 5.0  # a proxy kept waiting for its core longer than this share of a run makes its figures suspect
FAIR_NOTE = (
    "CPU per unit of work is the fair comparison: on this small machine HAProxy saturates the load-generator "
    "core before its own, so throughput and latency largely measure the load core (see 'load core busy %')."
)


def fmt(v: Any) -> str:
    """A figure in a table cell: thousands separators for big numbers, 3 significant digits for small ones."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return ""
    return f"{a / b:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _ratio_cols(columns: list[str]) -> list[tuple[str, str, str]]:
    return [r for r in RATIOS if r[0] in columns and r[1] in columns]


def scenario_block(sc: Scenario, settings: Settings, columns: list[str], res: Results) -> list[str]:
    """The table of one scenario: a row per figure, a column per proxy, then the wsproxy/HAProxy ratios."""
    ratios = _ratio_cols(columns)
    per_col = res.get(sc.key, {})
    rows = []
    for key, label in sc.rows:
        vals = [(per_col.get(c) or {}).get(key) for c in columns]
        cells = [fmt(v) for v in vals]
        for a, b, _ in ratios:
            if key in RATIO_KEYS:
                cells.append(ratio((per_col.get(a) or {}).get(key), (per_col.get(b) or {}).get(key)))
            else:
                cells.append("")
        rows.append([label, *cells])
    title = f"{sc.num}. " + sc.title.format(**asdict(settings))
    return [title, *_table(["", *columns, *(r[2] for r in ratios)], rows), ""]


def summary_block(scenarios: list[Scenario], columns: list[str], res: Results) -> list[str]:
    """CPU (and memory, latency) per unit of work, every scenario on one table."""
    proxied = [c for c in columns if c != "direct"]
    ratios = _ratio_cols(proxied)
    rows = []
    for sc in scenarios:
        labels = dict(sc.rows)
        for key in sc.summary:
            cells = [fmt((res.get(sc.key, {}).get(c) or {}).get(key)) for c in proxied]
            for a, b, _ in ratios:
                cells.append(
                    ratio((res.get(sc.key, {}).get(a) or {}).get(key), (res.get(sc.key, {}).get(b) or {}).get(key))
                )
            rows.append([f"{sc.num}. {labels[key]}", *cells])
    return [
        "Summary: proxy cost per unit of work (lower is better)",
        *_table(["", *proxied, *(r[2] for r in ratios)], rows),
        "",
        FAIR_NOTE,
    ]


def noise_warnings(results: Results) -> list[str]:
    """A line for each run during which the proxy was kept waiting for its core by other work."""
    out = []
    for key, per_col in results.items():
        for col, figs in per_col.items():
            wait = (figs or {}).get("wait_pct")
            if isinstance(wait, float) and wait > NOISE_PCT:
                runs = figs.get("runs", 1) if figs else 1
                out.append(
                    f"warning: {key} {col}: the proxy waited for its core {wait:.0f}% of the time (other work "
                    f"on CPU 0; quietest of {runs} run(s)): its figures are noisy"
                )
    return out
