"""Kafka plumbing: client configuration (the only place librdkafka keys are written),
the embedded broker, and thin admin helpers."""
