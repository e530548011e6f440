"""Fixtures for the dashboard tests."""

from __future__ import annotations

import pytest
from tui_support import make_app

from tui.app import DashboardApp


@pytest.fixture
def app() -> DashboardApp:
    """A fresh dashboard over the scripted, clock-free source."""
    return make_app()
