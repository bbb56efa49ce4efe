"""The adapters for the city's department systems, one module each.

Each is installed as an entry point of the group ``bus.connect`` (see pyproject.toml)
and is found by its type name in ``topology.yaml``:

- ``http_ingest`` (:mod:`connectors.http_ingest`): departments push JSON over HTTP;
- ``http_webhook_sink`` (:mod:`connectors.webhook_sink`): a subscription POSTed to a
  department's endpoint.

Nothing here is imported by the bus itself: a type's module is loaded when a connector
of that type is validated or started.
"""
