"""``python -m bus.processors TOPOLOGY [IDLE_FLUSH_S|none [LOGLEVEL]]``: the processors in the foreground
(what ``bus process`` runs; also used by the integration tests as a subprocess)."""

import sys

from bus.kafka.config import KafkaSettings
from bus.processors.app import run_worker
from bus.topology.validate import load_topology

if __name__ == "__main__":
    idle = float(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "none" else None
    loglevel = sys.argv[3] if len(sys.argv) > 3 else "WARNING"
    run_worker(load_topology(sys.argv[1]), KafkaSettings(), idle_flush_s=idle, loglevel=loglevel)
