"""Operations: consumer lag (Burrow's status rules, kafka-lag-exporter's time lag) and
Prometheus metrics.

- :mod:`bus.ops.burrow`: pure evaluation of a partition's window of commits.
- :mod:`bus.ops.timelag`: the log-end-offset -> time table and its interpolation.
- :mod:`bus.ops.lag`: the bus's consumer-group names, reading offsets from the broker,
  and :class:`~bus.ops.lag.LagMonitor`, which keeps the windows between polls.
- :mod:`bus.ops.metrics`: the prometheus-client registry and :class:`~bus.ops.metrics.BusMonitor`,
  the hooks the router and the connectors call.
"""
