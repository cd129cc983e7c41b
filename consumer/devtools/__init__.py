"""Development tooling, apart from the worker's runtime path: the embedded stack (Tansu for the
Kafka API, SeaweedFS for S3) as managed subprocesses, and the generated configuration reference."""
