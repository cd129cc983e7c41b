"""Stage 1, records in: the Kafka clients, polling (with keep-alive polls while busy), rebalance
hooks, and the control topic's cancels (read by every worker, outside the group)."""
