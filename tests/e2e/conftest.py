"""End-to-end tests use the connector tests' real endpoints and clean namespaces."""

from tests.connectors.conftest import connector_city, make_endpoint  # noqa: F401 (fixtures)
