"""Helpers shared by the test suites (real servers to test against)."""
