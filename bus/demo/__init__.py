"""The demo city: realistic sample records and (later) simulators of departments' systems."""
