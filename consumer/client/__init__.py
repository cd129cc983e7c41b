"""The producer side, for services and the CLI: `GenerationClient` (submit, cancel, wait,
progress) on aiokafka, without torch or diffusers; `submit` and `oneshot` are the CLI's commands."""

from consumer.client.generation_client import BrokerUnavailable, GenerationClient

__all__ = ["BrokerUnavailable", "GenerationClient"]
