"""Which connector types are installed: a name -> ``module:Class`` map read from the
entry-point group ``bus.connect``.

A department's own package adds a connector type by declaring, in its pyproject.toml::

    [project.entry-points."bus.connectors"]
    parking_gates = "parking_bus.gates:GateSource"

Nothing registers itself by being imported: a type's module is imported only when a
connector of that type is validated or started.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

from pydantic import ValidationError

from bus.connect.base import Sink, Source
from bus.connect.config import model_problems, resolve_secrets
from bus.connect.exceptions import ConnectorError, ConnectorLoadError, Loc, UnknownConnectorType

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
            f"connector type {name!r} names {target}, which is not a subclass of bus.connect.Source "
            "or bus.connect.Sink"
        )
    return kind


def config_problems(
    connector_type: str,
    config: Mapping[str, Any],
    *,
    check_secrets: bool = False,
    skip_unknown_types: bool = False,
    entry_points: Iterable[EntryPoint] | None = None,
) -> list[tuple[Loc, str]]:
    """Every problem of one connector entry of ``topology.yaml``: ``(loc, message)`` with
    ``loc`` relative to the entry (``("config", "auth", "token")``, or ``("type",)`` when
    the type is not installed), ready for ``Document.problem(("connectors", i, *loc), msg)``.

    Secrets are only checked for form (``env:``/``file:``) unless ``check_secrets``, since
    the machine that validates a topology rarely holds the production secrets. With
    ``skip_unknown_types`` a type that is not installed here is not a problem (its config
    is then not checked).
    """
    try:
        kind = load_connector_class(connector_type, entry_points=entry_points)
    except UnknownConnectorType as exc:
        return [] if skip_unknown_types else [(("type",), str(exc))]
    except ConnectorError as exc:
        return [(("type",), str(exc))]
    try:
        parsed = kind.config_model.model_validate(dict(config))
    except ValidationError as exc:
        return [(("config", *loc), message) for loc, message in model_problems(kind.config_model, exc)]
    if not check_secrets:
        return []
    return [(("config", *loc), message) for loc, message in resolve_secrets(parsed)]


@dataclass(frozen=True)
class KitChecks:
    """The kit's checks of the connector entries of a topology, for
    :func:`bus.topology.validate.check_topology` (``bus validate``) and
    :func:`bus.topology.validate.load_topology`, which cannot import the kit."""

    entry_points: Iterable[EntryPoint] | None = None

    def installed_types(self) -> list[str]:
        return sorted(installed_types(self.entry_points))

    def config_problems(self, connector_type: str, config: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        return config_problems(connector_type, config, skip_unknown_types=True, entry_points=self.entry_points)


#: The checks of the connector types installed here.
KIT_CHECKS = KitChecks()
