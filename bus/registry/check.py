"""`bus schemas check`: the schemas in ``schemas/`` against what the registry holds.

Each event type's local schema is compared with the registered versions of its subject
under the event type's compatibility mode (from the topology), before anything is
registered. Reports which field breaks compatibility and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.registry.client import registry_call
from bus.schemas.compat import Incompatibility, check_compatibility
from bus.topology.models import Topology

Status = Literal["new", "unchanged", "compatible", "incompatible"]


@dataclass
class SchemaCheck:
    event_type: str
    subject: str
    mode: str
    status: Status
    registered_versions: list[int] = field(default_factory=list)
    problems: list[Incompatibility] = field(default_factory=list)

    def render(self) -> str:
        head = f"{self.event_type} ({self.subject}, {self.mode}): {self.status}"
        if self.status == "new":
            head += " (not registered yet; it will be version 1)"
        elif self.registered_versions:
            head += f" (registered versions {', '.join(map(str, self.registered_versions))})"
        lines = [head]
        lines += [f"  - version {p.version}, {p.direction}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def _registered(client: SchemaRegistryClient, subject: str) -> list[tuple[int, str]]:
    try:
        versions = registry_call(client, lambda: client.get_versions(subject))
    except SchemaRegistryError as exc:
        if exc.error_code == 40401:
            return []
        raise
    return [
        (v, registry_call(client, lambda v=v: client.get_version(subject, v)).schema.schema_str)
        for v in sorted(versions)
    ]


def check_schemas(topology: Topology, client: SchemaRegistryClient) -> list[SchemaCheck]:
    results = []
    for et in topology.event_types:
        local = topology.schema_for(et.name).schema
        registered = _registered(client, et.subject)
        versions = [v for v, _ in registered]
        mode = str(et.compatibility)
        if not registered:
            results.append(SchemaCheck(et.name, et.subject, mode, "new"))
            continue
        if json.loads(registered[-1][1]) == local:
            results.append(SchemaCheck(et.name, et.subject, mode, "unchanged", versions))
            continue
        problems = check_compatibility(local, [s for _, s in registered], mode, versions=versions)
        status: Status = "incompatible" if problems else "compatible"
        results.append(SchemaCheck(et.name, et.subject, mode, status, versions, problems))
    return results
