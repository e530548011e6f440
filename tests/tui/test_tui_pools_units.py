"""The pure pool and route helpers of the dashboard (tui/pools.py): grouping, health, the p cycle, route rates."""

from __future__ import annotations

import pytest
import tui_support  # noqa: F401  (puts the repo on sys.path)
from textual.app import App
from textual.widgets import Label
from tui_support import SIZE

from tui import pools as pl
from tui.widgets.graphs import NAME_MAX, NAME_MIN, Graphs, name_width
from tui.widgets.status_bar import balance_label


@pytest.mark.parametrize(
    ("status", "grouped"),
    [
        ({"servers": [{"name": "b1"}]}, False),
        ({"pools": [{"name": "default"}], "routes": [], "servers": [{"name": "b1", "pool": "default"}]}, False),
        ({"pools": [{"name": "chat"}, {"name": "notify"}]}, True),
        ({"servers": [{"name": "be/s1", "pool": "be"}, {"name": "api/s1", "pool": "api"}]}, True),
    ],
)
def test_grouped_only_with_several_pools(status: dict, grouped: bool) -> None:
    """No pools or one pool is today's view; two pools (listed, or named by servers) group the table."""
    assert pl.grouped(status) is grouped


@pytest.mark.parametrize(
    ("servers", "up", "kind"), [(3, 3, "up"), (3, 2, "going-down"), (3, 0, "down"), (0, 0, "down")]
)
def test_pool_health_colour(servers: int, up: int, kind: str) -> None:
    """All up is up, some up is a warning, none up (or an empty pool) is down."""
    assert pl.health_kind({"servers": servers, "up": up}) == kind


@pytest.mark.parametrize(("current", "after"), [(None, "a"), ("a", "b"), ("b", None), ("gone", "a")])
def test_pool_cycle(current: str | None, after: str | None) -> None:
    """`p`: all, then each pool in order, then all again; a vanished pool restarts the cycle."""
    assert pl.next_pool(current, ["a", "b"]) == after


def test_route_rates_need_a_window_and_survive_renumbering() -> None:
    """A rate appears after MIN_RATE_WINDOW_S; a count going back (engine restart) resets it; it follows the route."""
    rates = pl.RouteRates()
    route = {"index": 0, "host": "chat.example.com", "pool": "chat", "matched": 10}
    rates.update([route], 100.0)
    rates.update([{**route, "matched": 11}], 100.25)
    assert rates.rate(route) is None
    rates.update([{**route, "matched": 20}], 102.0)
    assert rates.rate(route) == pytest.approx(5.0)
    rates.update([{**route, "index": 1, "matched": 24}], 103.0)  # a route inserted before it: same route
    assert rates.rate({**route, "index": 1}) == pytest.approx(4.0)
    rates.update([{**route, "matched": 2}], 104.0)
    assert rates.rate(route) is None


@pytest.mark.parametrize(
    ("names", "width"),
    [
        (["b1", "b2", "total"], NAME_MIN),  # a single pool keeps the stylesheet's column
        (["chat/n1", "feed/n2", "total"], 9),  # POOL/NAME: the whole name and its padding
        (["socketio-fleet/node-12", "total"], NAME_MAX),  # bounded: the sparklines keep their room
        ([], NAME_MIN),
    ],
)
def test_graph_name_column_fits_pool_names(names: list[str], width: int) -> None:
    """The graphs' name column widens for POOL/NAME series so `chat/n1` and `chat/n2` do not both read `chat/n`."""
    assert name_width(names) == width


async def test_graph_rows_show_whole_pool_names() -> None:
    """Rates for chat/n1 and feed/n1: every row's name label gets the widened column, the total row too."""
    app = App[None]()
    async with app.run_test(size=SIZE) as pilot:
        graphs = Graphs()
        await app.mount(graphs)
        series = {"active": [1.0], "handshakes": [0.0]}
        graphs.update_rates({"total": series, "servers": {"chat/n1": series, "feed/n1": series}})
        await pilot.pause()
        labels = {str(label.content): label.size.width for label in graphs.query(".graph-name").results(Label)}
        assert labels == {"total": 9, "chat/n1": 9, "feed/n1": 9}


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ({"engine": {"balance": "ip_hash"}, "servers": [{"name": "b1"}]}, "ip_hash"),
        ({"engine": {"balance": "round_robin"}, "pools": [{"name": "chat"}, {"name": "feed"}]}, "2 pools"),
        ({"engine": {}}, "?"),
    ],
)
def test_status_bar_balance_with_pools(status: dict, label: str) -> None:
    """One pool: the engine's balance; several: each pool has its own (the headers show it), so the bar counts them."""
    assert balance_label(status) == label


@pytest.mark.parametrize(
    ("event", "label"),
    [
        ({"route": 0, "pool": "chat"}, "route 1"),
        ({"route": 2}, "route 3"),
        ({"route": None, "pool": "chat"}, "default"),
    ],
)
def test_route_labels_count_from_one_like_the_commands(event: dict[str, object], label: str) -> None:
    """Events carry the 0-based index; the log shows the position `wsproxy route remove N` takes."""
    assert pl.route_label(event) == label
