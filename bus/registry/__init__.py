"""The schema registry.

- ``bus.registry.server``: ``EmbeddedRegistry`` (background thread) and ``serve_forever``
  (``bus registry``): the embedded Confluent-compatible registry.
- ``bus.registry.app``: its REST API subset, a Starlette app over a ``SchemaStore``.
- ``bus.registry.store``: schemas, versions and configs in a compacted Kafka topic.
- ``bus.registry.client``: helpers for any Confluent-compatible registry
  (``registry_client``, ``registry_call``, ``wait_for_registry``).

Import from the modules: the client side stays free of the server's dependencies.
"""
