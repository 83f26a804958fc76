"""Dagster integration for a paid mobile-number status API."""
