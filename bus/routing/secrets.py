"""Per-department keys for keyed hashing (HMAC-SHA256).

The same person hashes to the same value within one department (records link up) and to
different values in different departments (they cannot be joined). Keys come from, in
order: ``BUS_HASH_KEY_<DEPARTMENT>`` (the department's own key), or a key derived from
``BUS_HASH_MASTER_KEY`` and the department name. Without either, a development key is
used and a warning says so: never run a real city on it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import structlog

log = structlog.get_logger(__name__)

_DEV_MASTER = b"bus-development-master-key-do-not-use-in-production"
_warned = False


def department_hash_key(department: str, environ: dict[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    own = env.get(f"BUS_HASH_KEY_{department.upper()}")
    if own:
        return own.encode("utf-8")
    master = env.get("BUS_HASH_MASTER_KEY")
    if not master:
        global _warned
        if not _warned:
            log.warning(
                "no BUS_HASH_MASTER_KEY set: hashing personal data with the development key; "
                "set BUS_HASH_MASTER_KEY (or BUS_HASH_KEY_<DEPARTMENT>) before real data flows"
            )
            _warned = True
        master_key = _DEV_MASTER
    else:
        master_key = master.encode("utf-8")
    return hmac.new(master_key, f"department:{department}".encode(), hashlib.sha256).digest()
