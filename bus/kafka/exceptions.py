from __future__ import annotations

from bus.errors import BusError


class KafkaError(BusError):
    """A broker-side failure."""


class BrokerUnreachable(KafkaError):
    """No broker answered at the configured address within the bounded wait."""

    def __init__(self, bootstrap_servers: str, waited_s: float, detail: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.waited_s = waited_s
        msg = (
            f"no Kafka broker answered at {bootstrap_servers} within {waited_s:g} s"
            f"{': ' + detail if detail else ''}. Start one with `bus broker`, or set "
            "BUS_BOOTSTRAP_SERVERS to a reachable cluster."
        )
        super().__init__(msg)


class EmbeddedBrokerError(KafkaError):
    """The embedded broker binary could not be found or did not start."""


class LocalKafkaError(KafkaError):
    """A local Apache Kafka (``bus broker kafka``) could not be fetched, set up or started."""


class DeliveryFailed(KafkaError):
    """The broker did not acknowledge a record."""


class CompactedReadError(KafkaError):
    """A compacted topic (the bus's state: connector positions and status, the applied topology,
    the page's figures) could not be read to its end."""
