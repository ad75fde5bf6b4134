"""Pulse Assets: recursive forecast-model training as a Dagster asset graph."""
