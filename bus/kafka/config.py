"""Every broker and registry client configuration the bus makes is built here.

Nothing else in the bus writes librdkafka keys by hand. Two profiles:

- ``cluster``: a real Kafka cluster named by ``BUS_BOOTSTRAP_SERVERS``. Standard
  settings only; the lag algorithm and batching stay as Kafka expects.
- ``embedded``: the embedded tansu broker (docs/embedded-broker.md). Its workarounds live here and
  only here: single-record batches (the broker reports the last batch's base offset + 1
  as the high watermark, so batching makes watermarks, lag and faust table recovery
  wrong) for the bus's state (connector state, the registry; faust's changelogs are read to
  their real ends instead, see :mod:`bus.kafka.faust_transport`), while the
  data path is batched (see ``exact_data_watermarks``): what departments publish (a
  canonical topic's high watermark may then read low by its last batch, which the lag
  figures show and `bus tail` reads past) and what the router routes (exact all the same
  once each transaction ends: the last batch is then its commit or abort marker), a short
  session timeout (group joins take half of it), shorter fetch waits
  (the broker holds every fetch for the whole ``fetch.wait.max.ms`` even when data
  arrives, where Kafka answers at once: at librdkafka's 500 ms default a record waits
  240 ms on average; measured 4 ms at 20 ms), but not too short (each fetch costs the
  broker in proportion to the batches it walks: 100 ms, and 10 ms only on the shared
  router, the latency path), and a floor under the router's commit interval (see
  :func:`router_commit_interval_s`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
EMBEDDED_DEFAULT_REGISTRY = "http://127.0.0.1:8081"

#: Largest record value the bus accepts (bytes of the encoded value). Kafka's default
#: ``message.max.bytes`` is about 1 MB; we refuse above it before the broker does.
MAX_RECORD_BYTES = 1_000_000

Profile = Literal["embedded", "cluster"]

#: The embedded broker holds a fetch for the whole wait (see the module docstring), and every
#: fetch costs it time in proportion to the record batches of the partitions fetched. Readers
#: on the latency path (the shared router; not its backfill lanes) wait 10 ms; every other
#: reader 100 ms. Measured, 8 readers
#: of a 12-partition topic of 100,000 single-record batches: at 10 ms they had read 27,000 of
#: 800,000 records after 120 s (the broker saturated both cores, groups timed out); at 100 ms
#: they read everything in 11 s, and then, idle at the end, cost the broker 8% of a core.
EMBEDDED_FETCH_WAIT_MS = 100
EMBEDDED_LATENCY_FETCH_WAIT_MS = 10

#: On the embedded broker a fetch that returns data costs more with every record batch the
#: partition holds (it appears to walk them; an idle reader at the end stays cheap), and a
#: transaction adds two batches (records, commit marker) to each partition it writes.
#: Measured: with one reader tailing a topic written by ~66 transactions/s the broker went
#: from 28% to 73% of a core within 15 s; at ~41 transactions/s from 18% to 34%. The
#: router therefore commits at most every 20 ms here (at 1,000 records/s ~50 transactions
#: of ~20 records instead of ~100 of ~10): latency p99 83-143 ms against 115-288 ms
#: without, in alternating runs of one process.
EMBEDDED_MIN_COMMIT_INTERVAL_S = 0.02

#: Prefetched records a consumer may hold (librdkafka's default is 65,536 KB).
CONSUMER_QUEUE_KBYTES = 16_384

#: The lag probe reads a few hundred offsets behind each group (``bus.ops.lag``) and fetches
#: little: librdkafka's defaults (1 MB per partition, 50 MB per fetch, 16 MB prefetched) would
#: make the broker read and send megabytes of backlog for a count. A fetch still returns the
#: first record batch whole when it is larger (KIP-74). It is told when it reaches the end a
#: read_committed reader can reach: the only sign of the last stable offset on the embedded
#: broker, whose ListOffsets answers 0 for it while a transaction is open.
PROBE_FETCH = {
    "max.partition.fetch.bytes": 16 * 1024,
    "fetch.max.bytes": 1024 * 1024,
    "queued.max.messages.kbytes": 1024,
    "enable.partition.eof": True,
}

#: librdkafka's own log lines go through Python logging instead of raw stderr.
LIBRDKAFKA_LOGGER = logging.getLogger("bus.kafka.librdkafka")


class KafkaSettings(BaseSettings):
    """Where the broker and the registry are, read from ``BUS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BUS_", extra="ignore")

    bootstrap_servers: str = Field(
        default=EMBEDDED_DEFAULT_BOOTSTRAP,
        description="Kafka bootstrap servers, host:port[,host:port]. Unset means the "
        "embedded broker (`bus broker`) on 127.0.0.1:9092.",
        examples=["kafka-1.city.local:9092,kafka-2.city.local:9092"],
    )
    registry_url: str = Field(
        default=EMBEDDED_DEFAULT_REGISTRY,
        description="Base URL of a Confluent-compatible schema registry.",
        examples=["http://127.0.0.1:8081", "https://registry.city.local"],
    )
    kafka_profile: Profile | None = Field(
        default=None,
        description="`embedded` applies the embedded broker's workarounds; `cluster` "
        "never does. Default: `cluster` when BUS_BOOTSTRAP_SERVERS is set, else `embedded`.",
    )
    exact_watermarks: bool = Field(
        default=True,
        description="On the embedded profile, one record per produce batch for the bus's state "
        "(connector state, the registry, dead-letter replay logs) so that the broker's high watermark "
        "is exact where the bus reads to it. Benchmarks of raw throughput turn it off for baseline "
        "and bus alike.",
    )
    exact_data_watermarks: bool = Field(
        default=False,
        description="On the embedded profile, also one record per batch on the data path: what "
        "departments publish (canonical topics), what the router routes (subscription topics) and "
        "what the processors write (faust: outputs and changelogs); with `exact_watermarks` only. "
        "Off: those topics are batched, and their lag figures may read up to one batch low. The "
        "broker's cost per fetch grows with every batch a partition holds: with single-record "
        "publishing `bus up --demo` saturated it within a minute and the router fell behind for good.",
    )
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long to wait for a broker or registry before giving up.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    registry_username: str | None = None
    registry_password: SecretStr | None = None

    @model_validator(mode="after")
    def _default_profile(self) -> "KafkaSettings":
        if self.kafka_profile is None:
            explicit = "bootstrap_servers" in self.model_fields_set
            self.kafka_profile = "cluster" if explicit else "embedded"
            # a default, not a choice: bus.kafka.admin.with_detected_profile may still ask the broker
            self.__pydantic_fields_set__.discard("kafka_profile")
        return self

    @property
    def embedded(self) -> bool:
        return self.kafka_profile == "embedded"

    def with_broker(self, bootstrap_servers: str, *, embedded: bool) -> "KafkaSettings":
        """The same settings pointed at another broker (e.g. one started on a free port)."""
        return self.model_copy(
            update={
                "bootstrap_servers": bootstrap_servers,
                "kafka_profile": "embedded" if embedded else "cluster",
            }
        )

    def with_exact_watermarks(self, exact: bool) -> "KafkaSettings":
        """Single-record batches for everything (state and data path) or for nothing: the
        benchmarks run their baseline and the bus on equal terms."""
        return self.model_copy(update={"exact_watermarks": exact, "exact_data_watermarks": exact})

    @property
    def single_record_batches(self) -> Literal["all", "state", "none"]:
        """What is written one record per batch, for the benchmarks' reports."""
        if not (self.embedded and self.exact_watermarks):
            return "none"
        return "all" if self.exact_data_watermarks else "state"

    def with_registry(self, registry_url: str) -> "KafkaSettings":
        return self.model_copy(update={"registry_url": registry_url})

    def to_environ(self) -> dict[str, str]:
        """These settings as ``BUS_*`` variables, for a child process (secrets included:
        the environment of a child, never a log line)."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"BUS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def _common(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "socket.connection.setup.timeout.ms": int(settings.connect_timeout_s * 1000),
        "logger": LIBRDKAFKA_LOGGER,
        "log.connection.close": False,
    }
    if settings.security_protocol != "PLAINTEXT":
        conf["security.protocol"] = settings.security_protocol
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        conf["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        conf["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    return conf


def producer_config(
    settings: KafkaSettings,
    *,
    client_id: str,
    transactional_id: str | None = None,
    delivery_timeout_s: float = 30.0,
    data_path: bool = False,
) -> dict[str, Any]:
    """An idempotent, acks=all producer. With ``transactional_id``, a transactional one.
    ``data_path``: it writes departments' records (the publisher into canonical topics, the
    router into subscription topics); on the embedded profile batched unless
    ``exact_data_watermarks``. Everything else the bus writes is its state: single-record
    batches there while ``exact_watermarks``."""
    conf = _common(settings, client_id)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": MAX_RECORD_BYTES + 64 * 1024,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
        }
    )
    if transactional_id:
        conf["transactional.id"] = transactional_id
    exact = settings.exact_watermarks and (settings.exact_data_watermarks or not data_path)
    if settings.embedded and exact:
        # One record per batch: the embedded broker's high watermark is only right then.
        conf["linger.ms"] = 0
        conf["batch.num.messages"] = 1
    return conf


def consumer_config(
    settings: KafkaSettings,
    *,
    group_id: str,
    client_id: str,
    read_committed: bool = True,
    from_beginning: bool = True,
    max_fetch_wait_ms: int | None = None,
    group_instance_id: str | None = None,
    latency_bound: bool = False,
    probe: bool = False,
) -> dict[str, Any]:
    """A consumer that commits explicitly and reads only committed transactions.

    ``max_fetch_wait_ms`` bounds how long the broker may hold a fetch for more data
    (librdkafka's default is 500 ms): interactive readers and latency-bound loops lower it.
    ``latency_bound``: a reader on the publish -> subscription path (the router); on the
    embedded broker it fetches more often (``EMBEDDED_LATENCY_FETCH_WAIT_MS``), at a cost.
    ``group_instance_id`` makes the member static (KIP-345): a restarted process with the
    same id takes its partitions back without a rebalance.
    ``probe``: the lag probe, which reads little at a time and is told of each partition's end (``PROBE_FETCH``)."""
    conf = _common(settings, client_id)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            # librdkafka prefetches up to 64 MB per consumer by default; a process holds a dozen
            # (router, lanes, sinks), and one that falls behind fills its queue: its memory then
            # tracks the backlog. 16 MB is still thousands of records per partition.
            "queued.max.messages.kbytes": CONSUMER_QUEUE_KBYTES,
        }
    )
    if settings.embedded:
        conf["session.timeout.ms"] = 6000
        conf["heartbeat.interval.ms"] = 1000
        conf["fetch.wait.max.ms"] = EMBEDDED_LATENCY_FETCH_WAIT_MS if latency_bound else EMBEDDED_FETCH_WAIT_MS
    if max_fetch_wait_ms is not None:
        conf["fetch.wait.max.ms"] = max_fetch_wait_ms
    if group_instance_id is not None:
        conf["group.instance.id"] = group_instance_id
    if probe:
        conf.update(PROBE_FETCH)
    return conf


def router_commit_interval_s(settings: KafkaSettings) -> float:
    """The least time between the starts of two router transactions. Records that arrive
    meanwhile join the next one. Kafka takes a transaction per batch in its stride (no
    floor); the embedded broker gets slower with every one (``EMBEDDED_MIN_COMMIT_INTERVAL_S``)."""
    return EMBEDDED_MIN_COMMIT_INTERVAL_S if settings.embedded else 0.0


def admin_config(settings: KafkaSettings, *, client_id: str = "bus-admin") -> dict[str, Any]:
    return _common(settings, client_id)


def faust_settings(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` (aiokafka driver; the confluent driver does not
    consume on the embedded broker). faust's producer writes the processors' outputs and their
    tables' changelogs; on the embedded profile it batches unless everything is to be
    single-record: table recovery gets the real ends of the changelogs from the transport
    (:mod:`bus.kafka.faust_transport`), not from the broker's high watermark."""
    servers = ";".join(f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(","))
    conf: dict[str, Any] = {"broker": servers}
    if settings.embedded:
        conf.update({"broker_session_timeout": 6.0, "broker_heartbeat_interval": 1.0})
        if settings.single_record_batches == "all":
            conf.update({"producer_linger": 0.0, "producer_max_batch_size": 1})
    else:
        # A killed worker (SIGKILL, OOM) sends no LeaveGroup: Kafka keeps it in the group, holding
        # every partition, until its session times out, and its restarted successor's join waits
        # for that. faust's default session is 60 s: on Apache Kafka 4.4 a restarted worker sat in
        # "(Re-)joining group" for 60 s while no alarm was enriched (the SIGKILL case of
        # tests/processors/test_app.py). 10 s (Kafka's own default before 3.0; the broker's floor
        # is 6 s) bounds that stall; the heartbeats run on the consumer's own thread, not behind
        # the agents. Heartbeats every second (faust: 3 s) leave ten per session, and a live worker
        # hears of a rebalance (a worker joining) at its next heartbeat. Static membership
        # (group_instance_id) would spare the restart's wait but needs a stable, unique id per
        # worker and keeps a worker that stopped for good in the group for its whole session.
        conf.update({"broker_session_timeout": 10.0, "broker_heartbeat_interval": 1.0})
    return conf


def faust_fetch_wait_ms(settings: KafkaSettings) -> int | None:
    """The fetch wait of the processors' faust consumer, or None to keep faust's (1,500 ms,
    written into its driver; see :mod:`bus.kafka.faust_transport`). On Kafka that wait only
    bounds an idle poll; the embedded broker holds fetches for it, so it gets the readers' wait."""
    return EMBEDDED_FETCH_WAIT_MS if settings.embedded else None


def registry_client_config(settings: KafkaSettings) -> dict[str, Any]:
    """Configuration for confluent-kafka's ``SchemaRegistryClient``."""
    conf: dict[str, Any] = {
        "url": settings.registry_url,
        "timeout": max(1, int(settings.connect_timeout_s)),
        # Retries are ours to bound: a dead registry must be reported, not waited on.
        "max.retries": 1,
    }
    if settings.registry_username:
        password = settings.registry_password.get_secret_value() if settings.registry_password else ""
        conf["basic.auth.user.info"] = f"{settings.registry_username}:{password}"
    return conf
