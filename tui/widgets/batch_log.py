"""A Textual `Log` that costs less per batch of lines: same lines, same scrolling, fewer relayouts.

Textual's `Log.write_lines` (8.x), per call: starts a thread worker to measure the new lines' width and sets
`virtual_size` twice (a reactive with `layout=True`, so the whole screen is laid out again each time), and
never reuses a rendered line without a selection, so every scroll re-renders each visible line. With the
handshake log written four times a second that was the dashboard's next cost after the footer. Here:
- the width is measured at once (a few lines per batch: microseconds, no thread);
- when only the height grew and the widget's own size does not depend on its content (not `height: auto`),
  the virtual size is set without a layout, the way Textual's `_size_updated(layout=False)` does, and the
  scrollbars are updated and the widget repainted; a wider line still goes through the normal layout;
- a rendered line is kept (keyed by line index, invalidated exactly where `Log` invalidates its cache) when
  no selection is shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Log

if TYPE_CHECKING:
    from typing import Self


class BatchLog(Log):
    """`Log` with synchronous width measurement, layout only when the width grows, and a working line cache."""

    DEFAULT_CSS = """
    BatchLog {
        height: 1fr;
    }
    """

    _cached_style: Style | None = None

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        new_lines: list[str] = []
        for line in lines:
            new_lines.extend(line.splitlines())
        if not new_lines:
            return self
        following = self.is_vertical_scroll_end
        auto_scroll = self.auto_scroll if scroll_end is None else scroll_end
        start_line = len(self._lines)
        self._lines.extend(new_lines)
        if self.max_lines is not None and len(self._lines) > self.max_lines:
            self._prune_max_lines()
            start_line = max(0, len(self._lines) - len(new_lines))
        width = max(self._width, max(cell_len(self._process_line(line)) for line in new_lines))
        size = Size(width, len(self._lines))
        if width == self._width and not self.styles.is_auto_height:
            # Only the height changed and our own box does not depend on it: no layout pass needed.
            if size != self.virtual_size:
                self.set_reactive(Widget.virtual_size, size)
                self._scroll_update(size)
        else:
            self._width = width
            self.virtual_size = size
        self.refresh_lines(start_line, len(new_lines))
        if auto_scroll and not self.is_vertical_scrollbar_grabbed and following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self.refresh()
        return self

    def _render_line_strip(self, y: int, rich_style: Style) -> Strip:
        if self.text_selection is not None:
            return super()._render_line_strip(y, rich_style)  # renders, never caches without a selection
        cache = self._render_line_cache
        if rich_style != self._cached_style:  # e.g. the focus tint: every kept line is stale
            cache.clear()
            self._cached_style = rich_style
        strip = cache.get(y)
        if strip is None:
            strip = super()._render_line_strip(y, rich_style)
            cache[y] = strip
        return strip
