"""Observability: structured logs, Prometheus metrics, the decision log line."""
