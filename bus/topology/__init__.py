"""The city's topology: departments, event types, subscriptions, connectors and who may
see which personal data, read from ``topology.yaml`` and checked against the schemas.

``load_topology(path)`` returns a :class:`Topology` with its schema catalog attached, or
raises :class:`TopologyInvalid` listing every problem as ``FILE:LINE:COL: message``;
``validate_topology(path)`` returns those problems instead.
"""

from bus.topology.exceptions import CatalogMissing, Problem, TopologyError, TopologyInvalid, UnknownName
from bus.topology.filters import AllOf, AnyOf, Condition, Filter, Not
from bus.topology.models import City, Connector, Department, EventType, Subscription, Topology, Treatment
from bus.topology.validate import load_topology, validate_topology

__all__ = [
    "AllOf",
    "AnyOf",
    "CatalogMissing",
    "City",
    "Condition",
    "Connector",
    "Department",
    "EventType",
    "Filter",
    "Not",
    "Problem",
    "Subscription",
    "Topology",
    "TopologyError",
    "TopologyInvalid",
    "Treatment",
    "UnknownName",
    "load_topology",
    "validate_topology",
]
