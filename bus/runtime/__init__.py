"""Running the bus: `bus up` (everything in one process tree)."""
