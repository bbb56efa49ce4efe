"""The registry's state: schemas, subject versions and compatibility configs, kept in a
compacted Kafka topic and indexed in memory.

The topic holds one record per registered version and per config, keyed like
Confluent's ``_schemas`` topic:

- ``{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`` ->
  ``{"subject","version","id","schemaType","schema","deleted"}``. A soft delete rewrites
  the record with ``"deleted": true``; a permanent delete rewrites it as a marker
  ``{"subject","version","id","deleted":true,"permanent":true}`` without the schema text.
  Markers (rather than tombstones) keep every id ever issued in the topic, so that a
  restarted registry never hands out an id that records on some topic still carry.
- ``{"keytype":"CONFIG","subject":S|null,"magic":0}`` -> ``{"compatibilityLevel": L}``;
  a tombstone removes the config (``null`` subject = the global config).

The index is a function of the last value of each key, so reading the topic from the
start rebuilds exactly the state the registry had: the same ids, versions and configs.
Every write is produced with an idempotent producer and flushed (one record at a time:
the embedded broker's high watermark is only right for single-record batches) before
it is applied to the index and before the HTTP answer leaves.

One registry process is the only writer of its topic: the store reads the topic once,
at ``open()``, and does not follow writes made by others. Run one registry per topic.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as _KafkaErrorCode

from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.exceptions import BrokerUnreachable, KafkaError
from bus.registry.exceptions import (
    IncompatibleSchema,
    InvalidCompatibilityLevel,
    InvalidSchemaError,
    RegistryStartError,
    RegistryStorageError,
    SchemaNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from bus.schemas.compat import (
    CompatibilityMode,
    Incompatibility,
    InvalidSchema,
    check_compatibility,
    parse_schema,
)
from bus.topology.names import REGISTRY_TOPIC

log = structlog.get_logger(__name__)

DEFAULT_TOPIC = REGISTRY_TOPIC
DEFAULT_COMPATIBILITY = CompatibilityMode.BACKWARD
SUPPORTED_SCHEMA_TYPES = ("AVRO",)

VersionRef: TypeAlias = int | Literal["latest"]


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of one subject, as the REST API returns it."""

    subject: str
    version: int
    id: int
    schema: str
    deleted: bool = False


@dataclass(frozen=True)
class PreparedSchema:
    """A schema checked for the registry: compact text and an order-insensitive fingerprint."""

    text: str
    fingerprint: str


def prepare_schema(
    schema: Any, schema_type: str | None = None, references: Sequence[Any] | None = None
) -> PreparedSchema:
    """Validate a schema sent to the registry; InvalidSchemaError (42201) says what is wrong."""
    kind = (schema_type or "AVRO").upper()
    if kind not in SUPPORTED_SCHEMA_TYPES:
        raise InvalidSchemaError(
            f"schemaType {schema_type!r} is not supported: the embedded registry serves AVRO "
            "schemas only; register an Avro schema or use a full Confluent Schema Registry"
        )
    if references:
        raise InvalidSchemaError(
            "schema references are not supported by the embedded registry: register the schema "
            "with every named type it uses written out in full"
        )
    if not isinstance(schema, str) or not schema.strip():
        raise InvalidSchemaError("Empty schema: the request needs a 'schema' string holding Avro JSON")
    try:
        parse_schema(schema)
    except InvalidSchema as exc:
        raise InvalidSchemaError(f"Invalid schema: {exc}") from exc
    data = json.loads(schema)
    return PreparedSchema(
        text=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        fingerprint=_fingerprint(data),
    )


def _fingerprint(data: Any) -> str:
    """Equal for the same schema written with other whitespace or attribute order."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------------ the records


def schema_key(subject: str, version: int) -> dict[str, Any]:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def config_key(subject: str | None) -> dict[str, Any]:
    return {"keytype": "CONFIG", "subject": subject, "magic": 0}


#: Written (as a tombstone, which compaction removes) when the store opens.
NOOP_KEY: dict[str, Any] = {"keytype": "NOOP", "magic": 0}


def encode(obj: dict[str, Any] | None) -> bytes | None:
    """Deterministic JSON bytes: compaction compares keys byte for byte."""
    if obj is None:
        return None
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class VersionRecord:
    """The value of a SCHEMA record."""

    subject: str
    version: int
    id: int
    schema: str | None
    deleted: bool = False
    permanent: bool = False
    fingerprint: str = field(default="", compare=False)

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> "VersionRecord":
        schema = value.get("schema")
        return cls(
            subject=str(value["subject"]),
            version=int(value["version"]),
            id=int(value["id"]),
            schema=schema,
            deleted=bool(value.get("deleted", False)),
            permanent=bool(value.get("permanent", False)),
            fingerprint=_fingerprint(json.loads(schema)) if schema else "",
        )

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"subject": self.subject, "version": self.version, "id": self.id}
        if self.permanent:
            value.update(deleted=True, permanent=True)
        else:
            value.update(schemaType="AVRO", schema=self.schema, deleted=self.deleted)
        return value

    def registered(self) -> RegisteredVersion:
        assert self.schema is not None
        return RegisteredVersion(self.subject, self.version, self.id, self.schema, self.deleted)


# ------------------------------------------------------------------------- the index


class RegistryIndex:
    """The in-memory view of the topic. Pure: no I/O, no locking (the store locks)."""

    def __init__(self, default_compatibility: CompatibilityMode = DEFAULT_COMPATIBILITY) -> None:
        self.default_compatibility = default_compatibility
        self._subjects: dict[str, dict[int, VersionRecord]] = {}
        self._configs: dict[str | None, CompatibilityMode] = {}
        self._schemas: dict[int, str] = {}
        self._ids_by_fingerprint: dict[str, int] = {}
        self._refs: dict[int, set[tuple[str, int]]] = {}
        self.max_id = 0

    # -- applying records

    def apply(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        keytype = key.get("keytype")
        if keytype == "SCHEMA":
            self._apply_version(str(key["subject"]), int(key["version"]), value)
        elif keytype == "CONFIG":
            self._apply_config(key.get("subject"), value)
        else:
            log.debug("registry record ignored", keytype=keytype)

    def _apply_version(self, subject: str, version: int, value: dict[str, Any] | None) -> None:
        versions = self._subjects.setdefault(subject, {})
        old = versions.pop(version, None)
        if old is not None:
            self._unref(old)
        if value is None:
            return
        record = VersionRecord.from_value(value)
        versions[version] = record
        self.max_id = max(self.max_id, record.id)
        if not record.permanent:
            self._refs.setdefault(record.id, set()).add((subject, version))
            self._schemas.setdefault(record.id, record.schema or "")
            self._ids_by_fingerprint.setdefault(record.fingerprint, record.id)

    def _unref(self, record: VersionRecord) -> None:
        refs = self._refs.get(record.id)
        if refs is None:
            return
        refs.discard((record.subject, record.version))
        if not refs:
            del self._refs[record.id]
            self._schemas.pop(record.id, None)
            if self._ids_by_fingerprint.get(record.fingerprint) == record.id:
                del self._ids_by_fingerprint[record.fingerprint]

    def _apply_config(self, subject: str | None, value: dict[str, Any] | None) -> None:
        if value is None:
            self._configs.pop(subject, None)
            return
        level = value.get("compatibilityLevel") or value.get("compatibility")
        try:
            self._configs[subject] = CompatibilityMode.parse(str(level))
        except ValueError:
            log.warning("registry config record ignored", subject=subject, level=level)

    # -- queries

    def records(self, subject: str, *, deleted: bool) -> dict[int, VersionRecord]:
        """The subject's versions (soft-deleted ones too when ``deleted``), by number."""
        return {
            number: record
            for number, record in sorted(self._subjects.get(subject, {}).items())
            if not record.permanent and (deleted or not record.deleted)
        }

    def require(self, subject: str, *, deleted: bool) -> dict[int, VersionRecord]:
        records = self.records(subject, deleted=deleted)
        if not records:
            raise SubjectNotFound(subject)
        return records

    def resolve(self, subject: str, version: VersionRef, *, deleted: bool = False) -> VersionRecord:
        records = self.require(subject, deleted=deleted)
        if version == "latest":
            live = [r for r in records.values() if not r.deleted] or list(records.values())
            return live[-1]
        record = records.get(version)
        if record is None:
            raise VersionNotFound(subject, version)
        return record

    def subjects(self, *, deleted: bool = False, prefix: str | None = None) -> list[str]:
        return sorted(
            subject
            for subject in self._subjects
            if self.records(subject, deleted=deleted) and subject.startswith(prefix or "")
        )

    def next_version(self, subject: str) -> int:
        return max(self._subjects.get(subject, {}), default=0) + 1

    def id_for(self, fingerprint: str) -> int:
        """The id this schema has anywhere in the registry, or a fresh one."""
        return self._ids_by_fingerprint.get(fingerprint) or self.max_id + 1

    def schema(self, schema_id: int) -> str:
        text = self._schemas.get(schema_id)
        if text is None:
            raise SchemaNotFound(f"Schema {schema_id} not found.")
        return text

    def usages(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        self.schema(schema_id)
        found = []
        for subject, version in sorted(self._refs.get(schema_id, ())):
            if deleted or not self._subjects[subject][version].deleted:
                found.append((subject, version))
        return found

    def compatibility(self, subject: str | None = None) -> CompatibilityMode:
        if subject is not None and subject in self._configs:
            return self._configs[subject]
        return self._configs.get(None, self.default_compatibility)

    def has_config(self, subject: str | None) -> bool:
        return subject in self._configs


# ------------------------------------------------------------------------- the store


class SchemaStore:
    """The registry's operations, each a locked read of the index or a durable write.

    ``open()`` creates the topic if needed and rebuilds the index from it. The single
    writer rule of the module docstring applies.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str = DEFAULT_TOPIC,
        *,
        default_compatibility: CompatibilityMode = DEFAULT_COMPATIBILITY,
        write_timeout_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.write_timeout_s = write_timeout_s
        self._index = RegistryIndex(default_compatibility)
        self._lock = threading.RLock()
        self._producer: Producer | None = None

    # -- lifecycle

    def open(self, timeout_s: float = 30.0) -> "SchemaStore":
        """Create the topic if needed and rebuild the index; bounded by ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        try:
            wait_for_broker(self.settings, timeout_s=min(timeout_s, self.settings.connect_timeout_s))
            ensure_topics(self.settings, [TopicSpec.compacted(self.topic)], timeout_s=_left(deadline))
        except BrokerUnreachable as exc:
            raise RegistryStartError(
                f"the schema registry cannot start: it stores schemas in Kafka topic {self.topic}, "
                f"and {exc}"
            ) from exc
        except KafkaError as exc:
            raise RegistryStartError(f"the schema registry cannot start: {exc}") from exc
        with self._lock:
            index = RegistryIndex(self._index.default_compatibility)
            count = _read_to_end(self.settings, self.topic, index, deadline)
            self._index = index
            conf = producer_config(self.settings, client_id="bus-registry", delivery_timeout_s=self.write_timeout_s)
            self._producer = Producer(conf)
            # Fail at start, not at the first registration, if the topic cannot be written
            # (this also waits out the idempotent producer's initialisation).
            self._produce(NOOP_KEY, None)
        log.info(
            "schema registry store loaded",
            topic=self.topic,
            records=count,
            subjects=len(index.subjects(deleted=True)),
            max_id=index.max_id,
        )
        return self

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.write_timeout_s)
                self._producer = None

    # -- reads

    def schema_by_id(self, schema_id: int) -> str:
        with self._lock:
            return self._index.schema(schema_id)

    def usages_of_id(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        """(subject, version) pairs registered with this schema id."""
        with self._lock:
            return self._index.usages(schema_id, deleted=deleted)

    def subjects(self, *, deleted: bool = False, prefix: str | None = None) -> list[str]:
        with self._lock:
            return self._index.subjects(deleted=deleted, prefix=prefix)

    def versions(self, subject: str, *, deleted: bool = False) -> list[int]:
        with self._lock:
            return list(self._index.require(subject, deleted=deleted))

    def get_version(self, subject: str, version: VersionRef, *, deleted: bool = False) -> RegisteredVersion:
        with self._lock:
            return self._index.resolve(subject, version, deleted=deleted).registered()

    def lookup(
        self,
        subject: str,
        schema: Any,
        *,
        schema_type: str | None = None,
        references: Sequence[Any] | None = None,
        deleted: bool = False,
    ) -> RegisteredVersion:
        """The newest version of ``subject`` holding this schema (40401 / 40403 if none)."""
        prepared = prepare_schema(schema, schema_type, references)
        with self._lock:
            records = self._index.require(subject, deleted=deleted)
            for record in reversed(records.values()):
                if record.fingerprint == prepared.fingerprint:
                    return record.registered()
        raise SchemaNotFound(f"Schema not found under subject '{subject}'.")

    def compatibility(self, subject: str | None = None) -> CompatibilityMode:
        """The subject's level, else the global one, else BACKWARD."""
        with self._lock:
            return self._index.compatibility(subject)

    def check(
        self,
        subject: str,
        schema: Any,
        version: VersionRef | None = None,
        *,
        schema_type: str | None = None,
        references: Sequence[Any] | None = None,
    ) -> tuple[CompatibilityMode, list[Incompatibility]]:
        """What registering ``schema`` would meet: against one version (``latest`` or a
        number, in the subject's mode made non-transitive) or, with ``None``, against every
        live version as registration does."""
        prepared = prepare_schema(schema, schema_type, references)
        with self._lock:
            mode = self._index.compatibility(subject)
            if version is None or (version == "latest" and not self._index.records(subject, deleted=False)):
                previous = list(self._index.records(subject, deleted=False).values())
            else:
                previous = [self._index.resolve(subject, version)]
                mode = mode.non_transitive()
            return mode, _check(prepared, previous, mode)

    # -- writes

    def register(
        self,
        subject: str,
        schema: Any,
        *,
        schema_type: str | None = None,
        references: Sequence[Any] | None = None,
    ) -> RegisteredVersion:
        """Register ``schema`` under ``subject``: the existing version if it is there already,
        else a new version, after the compatibility check (IncompatibleSchema, 409)."""
        prepared = prepare_schema(schema, schema_type, references)
        with self._lock:
            live = self._index.records(subject, deleted=False)
            for record in reversed(live.values()):
                if record.fingerprint == prepared.fingerprint:
                    return record.registered()
            mode = self._index.compatibility(subject)
            problems = _check(prepared, list(live.values()), mode)
            if problems:
                raise IncompatibleSchema(subject, mode.value, problems)
            record = VersionRecord(
                subject=subject,
                version=self._index.next_version(subject),
                id=self._index.id_for(prepared.fingerprint),
                schema=prepared.text,
                fingerprint=prepared.fingerprint,
            )
            self._write([(schema_key(subject, record.version), record.to_value())])
        log.info("schema registered", subject=subject, version=record.version, schema_id=record.id)
        return record.registered()

    def set_compatibility(self, level: str, subject: str | None = None) -> CompatibilityMode:
        try:
            mode = CompatibilityMode.parse(level)
        except ValueError as exc:
            raise InvalidCompatibilityLevel(f"Invalid compatibility level: {exc}") from exc
        with self._lock:
            self._write([(config_key(subject), {"compatibilityLevel": mode.value})])
        log.info("compatibility set", subject=subject or "<global>", level=mode.value)
        return mode

    def delete_compatibility(self, subject: str | None = None) -> CompatibilityMode:
        """Drop the subject's (or the global) level; returns the level in force before."""
        with self._lock:
            before = self._index.compatibility(subject)
            if self._index.has_config(subject):
                self._write([(config_key(subject), None)])
            return before

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft delete (Confluent's default), or hard delete of a soft-deleted subject."""
        with self._lock:
            known = self._index.require(subject, deleted=True)
            live = [r for r in known.values() if not r.deleted]
            if not permanent:
                if not live:
                    raise SubjectSoftDeleted(subject)
                self._write([(schema_key(subject, r.version), _soft_deleted(r)) for r in live])
                return [r.version for r in live]
            if live:
                raise SubjectNotSoftDeleted(subject)
            writes: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
                (schema_key(subject, r.version), _hard_deleted(r)) for r in known.values()
            ]
            if self._index.has_config(subject):
                writes.append((config_key(subject), None))
            self._write(writes)
            return list(known)

    def delete_version(self, subject: str, version: VersionRef, *, permanent: bool = False) -> int:
        with self._lock:
            record = self._index.resolve(subject, version, deleted=permanent or version != "latest")
            if not permanent:
                if record.deleted:
                    raise VersionSoftDeleted(subject, record.version)
                self._write([(schema_key(subject, record.version), _soft_deleted(record))])
            else:
                if not record.deleted:
                    raise VersionNotSoftDeleted(subject, record.version)
                self._write([(schema_key(subject, record.version), _hard_deleted(record))])
            return record.version

    # -- durability

    def _write(self, records: Iterable[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        """Produce and flush each record, then apply it: the index never runs ahead of Kafka."""
        if self._producer is None:
            raise RegistryStorageError("the schema store is not open; call open() first")
        for key, value in records:
            self._produce(key, value)
            self._index.apply(key, value)

    def _produce(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        assert self._producer is not None
        failures: list[str] = []

        def delivered(err: Any, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        try:
            self._producer.produce(self.topic, key=encode(key), value=encode(value), on_delivery=delivered)
            remaining = self._producer.flush(self.write_timeout_s)
        except (KafkaException, BufferError) as exc:
            raise RegistryStorageError(
                f"could not write to schema topic {self.topic} on {self.settings.bootstrap_servers}: {exc}"
            ) from exc
        if remaining or failures:
            reason = failures[0] if failures else f"no acknowledgement within {self.write_timeout_s:g} s"
            raise RegistryStorageError(
                f"could not write to schema topic {self.topic} on {self.settings.bootstrap_servers}: "
                f"{reason}; check that the broker is up"
            )


def _soft_deleted(record: VersionRecord) -> dict[str, Any]:
    return replace(record, deleted=True).to_value()


def _hard_deleted(record: VersionRecord) -> dict[str, Any]:
    return replace(record, deleted=True, permanent=True).to_value()


def _check(
    prepared: PreparedSchema, previous: list[VersionRecord], mode: CompatibilityMode
) -> list[Incompatibility]:
    return check_compatibility(
        prepared.text,
        [r.schema or "" for r in previous],
        mode,
        versions=[r.version for r in previous],
    )


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _read_to_end(settings: KafkaSettings, topic: str, index: RegistryIndex, deadline: float) -> int:
    """Apply every record of ``topic`` to ``index``, up to the high watermarks read at start."""
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"bus-registry-loader-{uuid.uuid4().hex[:12]}",
            client_id="bus-registry-loader",
        )
    )
    try:
        ends = _end_offsets(consumer, topic, deadline)
        pending = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        count = 0
        while pending:
            if time.monotonic() > deadline:
                raise RegistryStorageError(
                    f"could not read schema topic {topic} to its end in time "
                    f"({len(pending)} partition(s) unfinished); is the broker overloaded?"
                )
            # consume() waits for the whole batch or the timeout: keep the timeout short.
            for msg in consumer.consume(num_messages=500, timeout=min(0.05, _left(deadline))):
                if _apply_message(msg, index):
                    count += 1
                if msg.error() is None and msg.offset() + 1 >= pending.get(msg.partition(), 0):
                    pending.pop(msg.partition(), None)
            _drop_finished(consumer, topic, pending)
        return count
    finally:
        consumer.close()


def _end_offsets(consumer: Consumer, topic: str, deadline: float) -> dict[int, int]:
    try:
        metadata = consumer.list_topics(topic, timeout=_left(deadline))
        partitions = sorted(metadata.topics[topic].partitions)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_left(deadline))[1]
            for p in partitions
        }
    except (KafkaException, KeyError) as exc:
        raise RegistryStorageError(f"could not read the end offsets of schema topic {topic}: {exc}") from exc


def _drop_finished(consumer: Consumer, topic: str, pending: dict[int, int]) -> None:
    """Compaction can remove the last offsets' records; the position still passes them."""
    if not pending:
        return
    for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
        if tp.offset >= 0 and tp.offset >= pending.get(tp.partition, 0):
            pending.pop(tp.partition, None)


def _apply_message(msg: Message, index: RegistryIndex) -> bool:
    error = msg.error()
    if error is not None:
        if error.code() == _KafkaErrorCode._PARTITION_EOF:
            return False
        raise RegistryStorageError(f"could not read schema topic {msg.topic()}: {error.str()}")
    try:
        key = json.loads(msg.key() or b"null")
        raw = msg.value()
        value = json.loads(raw) if raw is not None else None
        if not isinstance(key, dict) or not (value is None or isinstance(value, dict)):
            raise ValueError("key and value must be JSON objects")
        index.apply(key, value)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("registry record skipped", topic=msg.topic(), offset=msg.offset(), error=str(exc))
        return False
    return True
