"""HTTP surfaces of the bus: serving helpers and the ops endpoints (health, readiness, metrics)."""
