"""Which connector types are installed: a name -> ``module:Class`` map read from the
entry-point group ``bus.connectors``.

A department's own package adds a connector type by declaring, in its pyproject.toml::

    [project.entry-points."bus.connectors"]
    parking_gates = "parking_bus.gates:GateSource"

Nothing registers itself by being imported: a type's module is imported only when a
connector of that type is validated or started.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

from bus.connectors.exceptions import ConnectorLoadError, UnknownConnectorType

if TYPE_CHECKING:
    from bus.connectors.base import Sink, Source

GROUP = "bus.connectors"


@dataclass(frozen=True)
class InstalledType:
    """One installed connector type, as its entry point declares it."""

    name: str
    target: str  # "module:Class"
    distribution: str | None


def _entry_points(entry_points: Iterable[EntryPoint] | None) -> list[EntryPoint]:
    if entry_points is None:
        return list(importlib.metadata.entry_points(group=GROUP))
    return [ep for ep in entry_points if ep.group == GROUP]


def installed_types(entry_points: Iterable[EntryPoint] | None = None) -> dict[str, InstalledType]:
    """Every installed connector type by name. The same name declared twice with different
    targets is an error naming both (the same target twice, e.g. an editable install
    seen through two paths, is one type)."""
    found: dict[str, InstalledType] = {}
    for ep in _entry_points(entry_points):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else None
        current = InstalledType(ep.name, ep.value, dist)
        previous = found.get(ep.name)
        if previous is not None and previous.target != current.target:
            raise ConnectorLoadError(
                f"connector type {ep.name!r} is declared twice, as {previous.target} "
                f"({previous.distribution or '?'}) and as {current.target} ({dist or '?'}); uninstall one of "
                "the packages or rename one entry point"
            )
        found.setdefault(ep.name, current)
    return dict(sorted(found.items()))


def installed(entry_points: Iterable[EntryPoint] | None = None) -> dict[str, str]:
    """``{type name: "module:Class"}`` of every installed connector type."""
    return {name: t.target for name, t in installed_types(entry_points).items()}


def load_connector_class(
    name: str, *, entry_points: Iterable[EntryPoint] | None = None
) -> type[Source] | type[Sink]:
    """The class of connector type ``name`` (its module imported now)."""
    from bus.connectors.base import Sink, Source

    types = installed_types(entry_points)
    if name not in types:
        raise UnknownConnectorType(name, list(types))
    target = types[name].target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        kind = module
        for part in attr.split(".") if attr else []:
            kind = getattr(kind, part)
    except Exception as exc:  # an installed package that is broken: say which one
        raise ConnectorLoadError(
            f"connector type {name!r} names {target}, which cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(kind, type) and issubclass(kind, (Source, Sink))):
        raise ConnectorLoadError(
            f"connector type {name!r} names {target}, which is not a subclass of bus.connectors.Source "
            "or bus.connectors.Sink"
        )
    return kind
