"""Fixtures the fault tests share with the integration tests."""

from tests.integration.test_data_path import pool  # noqa: F401 - a fixture, found by pytest through this import
