"""Beside the path, for operators: the sidecar (/health, /ready, /v1/models, /metrics, purge),
health and its watchdog, metrics, JSON logs, and the start-up garbage-collector pause."""
