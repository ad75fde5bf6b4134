"""Dagster wiring: assets, checks, jobs and resources over the framework-free domain code."""
