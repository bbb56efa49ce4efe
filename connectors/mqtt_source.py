"""MQTT source: camera devices and IoT gateways that report over MQTT.

The source subscribes its topic patterns at QoS 1 (or 2) with a *persistent session*: a
fixed client id, MQTT v5 ``clean_start=False`` and a session expiry interval (MQTT 3.1.1:
``clean_session=False``). While the connector is down, the broker keeps the messages of
its subscriptions (up to the broker's queue limits: Mosquitto's ``max_queued_messages``)
and delivers them when it reconnects.

Each message is acknowledged (PUBACK) only after it is on the bus: paho's manual
acknowledgement (``manual_ack=True``) holds the PUBACK until :meth:`Source.produce` has
returned, i.e. the Kafka broker acknowledged the record, or until a bad payload is on the
dead-letter topic. A message the bus cannot take now (broker or registry unreachable) is
retried with backoff, never acknowledged meanwhile; if the connector stops first, the MQTT
broker redelivers it on the next connection. The guarantee is at-least-once: a crash
between the Kafka acknowledgement and the PUBACK republishes that message (same payload,
new CloudEvents id).

Payloads are JSON objects. Which event type a message becomes is configured:
``type_field`` (a payload field naming the type, through ``type_values``), else the first
of ``routes`` whose topic pattern matches, else ``event_type``, else the connector's only
``publishes`` type. A payload that is not JSON, names no publishable type or is not a
valid record goes to the dead-letter topic with the MQTT topic as its key and in the
``mqtt_topic`` header (and as ``__connect.errors.topic``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, ClassVar, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field

from bus.connect.base import Source, SourceContext
from bus.connect.config import ConnectorConfig, SecretRef
from bus.connect.exceptions import ConnectorError, ConnectorFailed, Interrupted
from bus.connect.records import RawRecord
from bus.kafka.exceptions import KafkaError
from bus.registry.exceptions import RegistryUnreachable
from bus.errors import BusError


class MqttRoute(BaseModel):
    """Messages of a topic pattern become records of one event type."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    topic: str = Field(description="MQTT topic pattern (+ and # wildcards).", examples=["cameras/+/alarm"])
    event_type: str = Field(description="Event type the messages become.", examples=["camera_alarm"])


class MqttSourceConfig(ConnectorConfig):
    """Settings of an `mqtt_source`."""

    host: str = Field("127.0.0.1", description="MQTT broker host.", examples=["mqtt.city.example.gov.cn"])
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.", examples=[1883, 8883])
    tls: bool = Field(False, description="Connect with TLS (system CA certificates).", examples=[True])
    topics: list[str] = Field(
        min_length=1, description="Topic patterns subscribed (+ and # wildcards).", examples=[["cameras/+/status"]]
    )
    qos: Literal[1, 2] = Field(1, description="QoS of the subscriptions (1 = at least once).", examples=[1])
    client_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="MQTT client id; the persistent session belongs to it. Default: `citybus-<connector name>`. "
        "Two running copies of the connector must not share it.",
        examples=["citybus-camera-devices-mqtt"],
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.", examples=["5", "3.1.1"])
    session_expiry_s: int = Field(
        86_400, ge=1,
        description="How long the broker keeps the session (and queues messages) while the connector is away "
        "(MQTT 5; with 3.1.1 the broker's persistent_client_expiration applies).", examples=[86400],
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.", examples=[30])
    username: str | None = Field(None, description="MQTT user name.", examples=["citybus"])
    password: SecretRef | None = Field(None, description="MQTT password (env:NAME or file:PATH).",
                                       examples=["env:MQTT_PASSWORD"])
    event_type: str | None = Field(None, description="Event type of every message (when no route or field says).",
                                   examples=["camera_status"])
    routes: list[MqttRoute] = Field(
        default_factory=list, description="Event type by topic pattern; the first match wins.",
        examples=[[{"topic": "cameras/+/alarm", "event_type": "camera_alarm"},
                   {"topic": "cameras/+/status", "event_type": "camera_status"}]],
    )
    type_field: str | None = Field(
        None, description="Payload field that names the event type (removed from the record before publishing).",
        examples=["kind"],
    )
    type_values: dict[str, str] = Field(
        default_factory=dict, description="type_field value -> event type (a value not listed is taken as the "
        "event type's own name).", examples=[{"alarm": "camera_alarm", "status": "camera_status"}],
    )
    max_payload_bytes: int = Field(1_048_576, ge=1, description="Larger payloads are dead-lettered.",
                                   examples=[1048576])


class PayloadInvalid(ConnectorError):
    """An MQTT payload that cannot become a record."""


class MqttSource(Source):
    """Publishes the JSON messages of MQTT topic patterns as camera_alarm / camera_status records."""

    config_model: ClassVar[type[ConnectorConfig]] = MqttSourceConfig

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, MqttSourceConfig)
        self.config: MqttSourceConfig = config
        self.client_id = config.client_id or f"citybus-{self.name}"
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self.received = 0

    # -- MQTT ------------------------------------------------------------------------------

    def setup(self) -> None:
        v5 = self.config.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if self.config.username is not None:
            client.username_pw_set(
                self.config.username,
                self.config.password.get_secret_value() if self.config.password is not None else None,
            )
        if self.config.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(1, 30)
        self._client = client
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.config.session_expiry_s
        try:
            client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s,
                           clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        except (OSError, ValueError) as exc:
            raise ConnectorError(
                f"connector {self.name!r} cannot connect to the MQTT broker at {self.config.host}:{self.config.port}: "
                f"{exc}"
            ) from None
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            self.log.warning("MQTT connection refused", reason=str(reason), host=self.config.host)
            return
        self._connect_error = None
        session = bool(getattr(flags, "session_present", False))
        self.log.info("MQTT connected", host=self.config.host, port=self.config.port, client_id=self.client_id,
                      session_present=session)
        client.subscribe([(pattern, self.config.qos) for pattern in self.config.topics])
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            self._connect_error = f"subscription refused: {', '.join(failed)}"
            self.log.warning("MQTT subscription refused", reasons=failed)
            return
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(message)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.running:
            self.log.warning("MQTT disconnected; reconnecting", reason=str(reason))

    def stop(self) -> None:
        self._inbox.put_nowait(None)  # type: ignore[arg-type]  (wakes run())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()  # messages not acknowledged are redelivered to the session
            client.loop_stop()

    def status_detail(self) -> dict[str, Any]:
        return {"broker": f"{self.config.host}:{self.config.port}", "topics": list(self.config.topics),
                "client_id": self.client_id, "received": self.received}

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._subscribed.wait(0.05):
            self.check_running()
            if time.monotonic() > deadline:
                raise ConnectorFailed(
                    self.name, f"no MQTT session with {self.config.host}:{self.config.port} within 30 s"
                    f"{': ' + self._connect_error if self._connect_error else ''}")
        self.mark_ready()
        while self.running:
            self.wait_while_paused()
            try:
                message = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if message is None:
                continue
            self.received += 1
            self._handle(message)
            self._ack(message)

    def _ack(self, message: mqtt.MQTTMessage) -> None:
        if self._client is not None and message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        raw = RawRecord(topic=message.topic, partition=None, offset=None, key=message.topic.encode("utf-8"),
                        value=message.payload, headers=(("mqtt_topic", message.topic.encode("utf-8")),),
                        timestamp_ms=int(time.time() * 1000))
        try:
            event_type, record = self.parse(message.topic, message.payload)
        except PayloadInvalid as exc:
            self.dead_letter(raw, exc)
            return
        retries = self.context.retry.start()
        while True:
            try:
                self.produce(event_type, record)
                return
            except (KafkaError, RegistryUnreachable) as exc:  # the bus is away: keep the message, retry
                delay = retries.next_delay()
                if delay is None:
                    delay = self.context.retry.backoff.max_s
                self.context.monitor.on_retry(raw, exc, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping; the message stays unacknowledged") from exc
            except BusError as exc:  # RecordInvalid, PublishRefused, too large...
                self.dead_letter(raw, PayloadInvalid(f"MQTT topic {message.topic}: {exc}"))
                return

    def parse(self, topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        """(event type, record) of one message; PayloadInvalid says what is wrong."""
        if len(payload) > self.config.max_payload_bytes:
            raise PayloadInvalid(f"MQTT topic {topic}: payload of {len(payload)} bytes is over "
                                 f"max_payload_bytes ({self.config.max_payload_bytes})")
        try:
            record = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadInvalid(f"MQTT topic {topic}: the payload is not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise PayloadInvalid(f"MQTT topic {topic}: the payload is JSON but not an object")
        return self.event_type_for(topic, record), record

    def event_type_for(self, topic: str, record: dict[str, Any]) -> str:
        config = self.config
        if config.type_field is not None:
            value = record.pop(config.type_field, None)
            if value is not None:
                return config.type_values.get(str(value), str(value))
            if not (config.routes or config.event_type):
                raise PayloadInvalid(f"MQTT topic {topic}: no {config.type_field!r} field naming the event type")
        for route in config.routes:
            if mqtt.topic_matches_sub(route.topic, topic):
                return route.event_type
        if config.event_type is not None:
            return config.event_type
        publishes = self.context.connector.publishes or []
        if len(publishes) == 1:
            return publishes[0]
        raise PayloadInvalid(f"MQTT topic {topic}: no route of the connector matches it and no event_type is set")


__all__ = ["MqttRoute", "MqttSource", "MqttSourceConfig", "PayloadInvalid"]
