"""Access enforced by Kafka itself, with real credentials.

A local Apache Kafka of this module's own, secured: SASL/SCRAM-SHA-512 and Kafka's
StandardAuthorizer (``allow.everyone.if.no.acl.found=false``). ``bus apply`` (the CLI, as
the cluster's super user ``admin``) makes the topics and the ACLs of a namespaced copy of
the shipped city. The router then runs as the bus's own principal ``User:bus``, which is
*not* a super user: it has only what ``bus apply`` granted it. Police publishes its camera
events with its own credentials, the bus the population changes (as the population-base
connector does). Then each department, with its own credentials, reads its subscription
topics and is refused everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from bus.demo.samples import GENERATORS
from bus.integrate.plan import make_plan, render
from bus.connect import ConnectorRunner
from bus.kafka.config import KafkaSettings, admin_config, consumer_config, producer_config
from bus.kafka.local import LocalKafka
from bus.publish import Publisher
from bus.registry.server import EmbeddedRegistry
from bus.routing.plan import build_routes
from bus.routing.service import RoutingService
from bus.schemas.records import to_datum
from bus.topology.models import Topology
from tests.connectors.support import Endpoint, entry_points
from tests.fixtures.city import write_city_topology
from bus.topology.names import connector_group
from bus.topology.validate import load_topology

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUS = [sys.executable, "-m", "bus"]
DEPARTMENTS = ("fire_brigade", "police", "statistics")
REFUSED_READ = {"TOPIC_AUTHORIZATION_FAILED"}
REFUSED_WRITE = {"TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"}
PER_TYPE = 40


@dataclass
class SecuredCity:
    kafka: LocalKafka
    path: Path
    topology: Topology
    registry_url: str
    registry_topic: str
    passwords: dict[str, str]
    expected: dict[str, set[str]]  # subscription topic -> ce_ids the router must have delivered
    published: int
    service: RoutingService
    apply_output: str
    logs: list[Path] = field(default_factory=list)

    @property
    def ns(self) -> str:
        assert self.topology.namespace is not None
        return self.topology.namespace

    def settings(self, user: str, password: str | None = None) -> KafkaSettings:
        return self.kafka.client_settings(user, password).with_registry(self.registry_url)

    def topics_of(self, department: str) -> list[str]:
        return [s.topic for s in self.topology.subscriptions if s.department == department]

    def canonical(self, event_type: str) -> str:
        return self.topology.event_type(event_type).topic


def wait_until(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001 (a predicate)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class SecuredCluster:
    kafka: LocalKafka
    passwords: dict[str, str]
    folder: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    folder = tmp_path_factory.mktemp("secured-kafka")
    passwords = {user: secrets.token_urlsafe(18) for user in ("admin", "bus", *DEPARTMENTS)}
    kafka = LocalKafka(folder / "kafka", scram_users={"admin": passwords["admin"], "bus": passwords["bus"]},
                       super_user="admin")
    with kafka:
        for department in DEPARTMENTS:  # users added to a running cluster
            kafka.add_scram_user(department, passwords[department])
        yield SecuredCluster(kafka, passwords, folder)


@dataclass
class AppliedCity:
    path: Path
    topology: Topology
    registry_url: str
    registry_topic: str
    apply_output: str


@contextlib.contextmanager
def applied_city(cluster: SecuredCluster, name: str, **topology_options: Any) -> Iterator[AppliedCity]:
    """A namespaced copy of the shipped city, applied by ``bus apply`` as the super user, and the
    registry the bus then runs (as ``User:bus``). The registry that serves `bus apply` runs as the
    super user (the bus may not touch its storage before apply granted it); then the bus's own
    registry takes over that storage."""
    kafka = cluster.kafka
    registry_topic = f"_bus_schemas-{name}-{uuid.uuid4().hex[:8]}"
    namespace = f"{name}_{uuid.uuid4().hex[:8]}"
    folder = cluster.folder / namespace
    folder.mkdir()
    path = write_city_topology(folder, namespace, **topology_options)
    registry = EmbeddedRegistry(kafka.client_settings("admin"), topic=registry_topic).start()
    try:
        admin = kafka.client_settings("admin").with_registry(registry.url)
        applied = _run_cli(["apply", "--topology", str(path), "--registry-topic", registry_topic, "--yes"], admin)
        assert applied.returncode == 0, applied.stdout + applied.stderr
    finally:
        registry.stop()
    registry = EmbeddedRegistry(kafka.client_settings("bus"), topic=registry_topic).start()
    try:
        yield AppliedCity(path, load_topology(path), registry.url, registry_topic, applied.stdout + applied.stderr)
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def secured(cluster: SecuredCluster) -> Iterator[SecuredCity]:
    kafka = cluster.kafka
    with applied_city(cluster, "acl") as city:
        topology = city.topology
        bus = kafka.client_settings("bus").with_registry(city.registry_url)
        service = RoutingService(topology, bus, environ={"BUS_HASH_MASTER_KEY": "acl-test"})
        with service:
            assert service.wait_assigned(90), "the router (as User:bus) was not given its partitions"
            expected, per_type = _publish(topology, kafka, city.registry_url)
            published = sum(per_type.values())

            def routed() -> bool:  # the shared router and each lane read their own event types
                return all(router.stats.committed_in >= sum(per_type.get(et, 0) for et in router.routes)
                           for router in list(service.routers.values()))

            wait_until(routed, 90, f"the router (as User:bus) to route {published} records")
            yield SecuredCity(kafka, city.path, topology, city.registry_url, city.registry_topic, cluster.passwords,
                              expected, published, service, city.apply_output,
                              [kafka.log_path(n.node_id) for n in kafka.nodes])


def _run_cli(args: list[str], settings: KafkaSettings) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    environ.update(settings.to_environ())  # the principal's credentials, as an operator's shell holds them
    return subprocess.run([*BUS, *args], capture_output=True, text=True, timeout=180, env=environ, cwd=REPO,
                          check=False)


def _publish(topology: Topology, kafka: LocalKafka, registry_url: str) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Police publishes its camera events as User:police, the bus the population changes (as
    the population-base connector does); returns what each subscription topic must receive."""
    rng = random.Random(20261207)
    routes = build_routes(topology, {"BUS_HASH_MASTER_KEY": "acl-test"})
    expected: dict[str, set[str]] = {s.topic: set() for s in topology.subscriptions}
    count: dict[str, int] = {}
    for publisher_user, event_types in (("police", ("camera_alarm", "camera_status")), ("bus", ("population_change",))):
        settings = kafka.client_settings(publisher_user).with_registry(registry_url)
        with Publisher(topology, settings) as publisher:
            for event_type in event_types:
                schema = topology.schema_for(event_type)
                owner = topology.event_type(event_type).owner
                for _ in range(PER_TYPE):
                    record = GENERATORS[event_type](rng)
                    done = publisher.publish(event_type, owner, record)
                    count[event_type] = count.get(event_type, 0) + 1
                    datum = to_datum(schema, record)
                    for route in routes.get(event_type, []):
                        if route.predicate(datum):
                            expected[route.topic].add(done.ce_id)
    return expected, count


# -- helpers: what one principal gets -------------------------------------------------------------


def read_all(settings: KafkaSettings, topic: str, group: str, count: int, timeout_s: float = 60.0) -> set[str]:
    """The ce_ids of ``count`` records of ``topic`` read in ``group`` (offsets committed), failing on
    any error; then nothing more within a short poll."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="acl-test-reader"))
    got: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            assert time.monotonic() < deadline, f"{settings.sasl_username} read {len(got)} of {count} from {topic}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), f"{settings.sasl_username} reading {topic} in {group}: {msg.error().str()}"
            got.append(dict(msg.headers() or [])["ce_id"].decode())
        extra = consumer.poll(0.5)
        assert extra is None or extra.error(), f"{topic} held more than the {count} records expected"
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert len(got) == len(set(got)), f"duplicates in {topic}"
    return set(got)


def read_refusal(settings: KafkaSettings, topic: str, group: str, timeout_s: float = 30.0) -> str:
    """The error a consumer in ``group`` gets reading ``topic``; "READ" if it got a record."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="acl-test-intruder"))
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                return msg.error().name() if msg.error() else "READ"
        return "NOTHING"
    finally:
        consumer.close()


def write_refusals(settings: KafkaSettings, topic: str, timeout_s: float = 20.0) -> set[str]:
    """The errors a producer of ``settings`` gets writing one record to ``topic`` ("DELIVERED")."""
    outcomes: list[KafkaError | None] = []  # read after flush: a fatal error is pending during its callbacks
    errors: set[str] = set()
    producer = Producer(producer_config(settings, client_id="acl-test-writer", delivery_timeout_s=timeout_s))
    try:
        producer.produce(topic, key=b"k", value=b"not from its owner", on_delivery=lambda err, _: outcomes.append(err))
        producer.flush(timeout_s + 5)
    except (KafkaException, SystemError) as exc:  # a fatal error: the idempotent producer got no producer id
        # (confluent-kafka 2.16 raises it from flush, then calls the purged record's callback with it
        # pending: a SystemError caused by the KafkaException)
        fatal = exc if isinstance(exc, KafkaException) else exc.__cause__
        assert isinstance(fatal, KafkaException), exc
        errors.add(fatal.args[0].name())
    return errors | {err.name() if err is not None else "DELIVERED" for err in outcomes}


def authentication_errors(settings: KafkaSettings, timeout_s: float = 20.0) -> set[str]:
    """The errors a client with ``settings`` gets asking for metadata."""
    errors: set[str] = set()
    conf = admin_config(settings, client_id="acl-test-login")
    conf["error_cb"] = lambda err: errors.add(err.name())
    client = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while not errors and time.monotonic() < deadline:
        try:
            client.list_topics(timeout=1)
            errors.add("ANSWERED")
        except KafkaException:
            client.poll(0.1)
    return errors


# -- the tests ------------------------------------------------------------------------------------


def test_apply_granted_every_binding_on_a_real_authorizer(secured: SecuredCity) -> None:
    assert " 0 not supported by this broker, 0 failed." in secured.apply_output, secured.apply_output
    assert "ACLs not supported" not in secured.apply_output
    plan = make_plan(secured.topology, secured.settings("admin"), registry_topic=secured.registry_topic)
    assert plan.acl_support.supported, plan.acl_support.reason
    assert plan.empty and not plan.unapplied_acls, render(plan)


def test_each_department_reads_its_own_subscriptions_in_its_groups(secured: SecuredCity) -> None:
    assert sum(map(len, secured.expected.values())) > 0
    for department in DEPARTMENTS:
        settings = secured.settings(department)
        topics = secured.topics_of(department)
        assert topics and any(secured.expected[t] for t in topics), department
        for topic in topics:
            group = f"{secured.ns}.{department}.{topic.rsplit('.', 1)[1]}"
            got = read_all(settings, topic, group, len(secured.expected[topic]))
            assert got == secured.expected[topic], topic
    # A department that runs its sink connector under its own identity reads with the sink's group.
    sinks = {c.department: c for c in secured.topology.connectors if c.subscription and c.department in DEPARTMENTS}
    assert set(sinks) == {"fire_brigade", "statistics"}
    for department, sink in sinks.items():
        assert sink.subscription is not None
        topic = secured.topology.subscription(sink.subscription).topic
        got = read_all(secured.settings(department), topic, connector_group(secured.ns, sink.name),
                       len(secured.expected[topic]))
        assert got == secured.expected[topic]


def test_a_department_is_refused_other_departments_and_canonical_topics(secured: SecuredCity) -> None:
    ns = secured.ns
    cases = [
        ("police", f"{ns}.city.sub.fire_brigade.fire-alarms"),
        ("fire_brigade", f"{ns}.city.sub.police.camera-maintenance"),
        ("statistics", f"{ns}.city.sub.police.population-registry"),
        ("fire_brigade", secured.canonical("camera_alarm")),
        ("statistics", secured.canonical("population_change")),
        ("police", secured.canonical("camera_alarm")),  # its own type: it may write it, never read it
        ("police", f"{ns}.bus-topology"),
        ("statistics", secured.registry_topic),
    ]
    for department, topic in cases:
        group = f"{ns}.{department}.reader"
        assert read_refusal(secured.settings(department), topic, group) in REFUSED_READ, (department, topic)


def test_a_department_reads_only_in_groups_of_its_own(secured: SecuredCity) -> None:
    ns = secured.ns
    topic = f"{ns}.city.sub.police.population-registry"
    for group in (f"{ns}.fire_brigade.reader", connector_group(ns, "fire-dispatch-webhook"), f"{ns}.bus-router",
                  f"{ns}.policex.reader", "police.reader"):
        assert read_refusal(secured.settings("police"), topic, group) == "GROUP_AUTHORIZATION_FAILED", group


def test_a_department_sees_only_its_topics_in_metadata(secured: SecuredCity) -> None:
    for department in DEPARTMENTS:
        client = AdminClient(admin_config(secured.settings(department), client_id="acl-test-metadata"))
        visible = set(client.list_topics(timeout=10).topics)
        owned = {et.topic for et in secured.topology.event_types if et.owner == department}
        assert visible == set(secured.topics_of(department)) | owned, department


def test_a_department_writes_only_the_types_it_owns(secured: SecuredCity) -> None:
    ns = secured.ns
    cases = [
        ("police", f"{ns}.city.sub.fire_brigade.fire-alarms"),  # another's subscription
        ("police", f"{ns}.city.sub.police.camera-maintenance"),  # its own subscription: the router's to write
        ("police", secured.canonical("population_change")),  # a type civil affairs owns
        ("fire_brigade", secured.canonical("camera_alarm")),  # owns no type at all
        ("statistics", f"{ns}.city.sub.statistics.population-statistics"),
    ]
    for department, topic in cases:
        errors = write_refusals(secured.settings(department), topic)
        assert "DELIVERED" not in errors and errors & REFUSED_WRITE, (department, topic, errors)
    # What it owns it writes: the fixture's camera events went out as User:police (and were routed).
    assert secured.expected[f"{ns}.city.sub.police.camera-maintenance"]


def test_wrong_credentials_are_refused(secured: SecuredCity) -> None:
    assert authentication_errors(secured.settings("police")) == {"ANSWERED"}
    wrong = secured.settings("police", password=secured.passwords["police"] + "x")
    assert "_AUTHENTICATION" in authentication_errors(wrong)
    someone_elses = secured.settings("police", password=secured.passwords["fire_brigade"])
    assert "_AUTHENTICATION" in authentication_errors(someone_elses)
    unknown = secured.settings("police", password="x").model_copy(update={"sasl_username": "water_affairs"})
    assert "_AUTHENTICATION" in authentication_errors(unknown)


def test_the_bus_principal_routed_everything_with_only_its_grants(secured: SecuredCity) -> None:
    stats = secured.service.stats
    assert secured.published == 3 * PER_TYPE
    assert stats.records_in == stats.committed_in and stats.dead_letters == 0
    assert stats.committed_out == sum(map(len, secured.expected.values()))
    assert not secured.service.restarts and not secured.service.refused
    # User:bus is no super user: it may not read what it only writes, nor grant itself more.
    bus = secured.settings("bus")
    idle_group = connector_group(secured.ns, "health-population-base")  # one it may use; no sink runs here
    assert read_refusal(bus, f"{secured.ns}.city.sub.police.population-registry", idle_group) in REFUSED_READ
    # Nor run `bus plan` (Kafka would show it no ACLs at all): a clear error, not a plan of every binding.
    planned = _run_cli(["plan", "--topology", str(secured.path), "--registry-topic", secured.registry_topic], bus)
    assert planned.returncode == 1 and "User:bus may not manage ACLs" in planned.stderr, planned.stdout + planned.stderr


def test_no_password_in_logs_or_on_command_lines(secured: SecuredCity) -> None:
    texts = [secured.apply_output] + [path.read_text(errors="replace") for path in secured.logs]
    for password in secured.passwords.values():
        assert not any(password in text for text in texts)
    for pid in secured.kafka.pids:
        assert not any(p in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                       for p in secured.passwords.values())
    for node in secured.kafka.nodes:
        assert (node.folder / "server.properties").stat().st_mode & 0o077 == 0
        assert not (node.folder / "arguments.private").exists()


# -- the whole bus as User:bus: an ingest source, the processors, the router, a webhook sink ---------


@dataclass
class Pipeline:
    city: AppliedCity
    posted: dict[str, dict[str, Any]]  # alarm_id -> the alarm posted to the ingest connector
    delivered: dict[str, dict[str, Any]]  # alarm_id -> the body the fire brigade's endpoint got
    processors_log: Path
    processors_exit: int | None


@pytest.fixture(scope="module")
def pipeline(cluster: SecuredCluster) -> Iterator[Pipeline]:
    """The processors (a `bus process` child), the router, Skynet's HTTP ingest and the fire
    brigade's webhook sink, each with User:bus's credentials and only what `bus apply` granted:
    fire alarms posted to the ingest reach the fire brigade through the processors' enriched topic."""
    kafka = cluster.kafka
    secrets_dir = cluster.folder / "connector-secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "token").write_text(token := secrets.token_urlsafe(12))
    (secrets_dir / "hmac").write_text(hmac_key := secrets.token_urlsafe(12))
    endpoint = Endpoint(hmac_key=hmac_key).start()
    options = {"enriched": True, "connector_config": {
        "skynet-platform": {"port": 0, "auth": {"token": f"file:{secrets_dir / 'token'}"}},
        "fire-dispatch-webhook": {"url": endpoint.url, "hmac_key": f"file:{secrets_dir / 'hmac'}"},
    }}
    try:
        with applied_city(cluster, "pipe", **options) as city, contextlib.ExitStack() as stack:
            bus = kafka.client_settings("bus").with_registry(city.registry_url)
            log_path = cluster.folder / f"processors-{city.topology.namespace}.log"
            environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")} | bus.to_environ()
            with log_path.open("w") as log:
                processors = subprocess.Popen([*BUS, "process", "--topology", str(city.path)], stdout=log,
                                              stderr=subprocess.STDOUT, env=environ, cwd=REPO)
            stack.callback(_stop, processors)
            service = stack.enter_context(RoutingService(city.topology, bus, environ={"BUS_HASH_MASTER_KEY": "acl"}))
            runners = [ConnectorRunner(city.topology.connector(name), city.topology, bus, entry_points=entry_points())
                       for name in ("fire-dispatch-webhook", "skynet-platform")]  # the sink consumes first
            for runner in runners:
                runner.start(60)
                stack.callback(runner.stop)
            assert service.wait_assigned(90), "the router (as User:bus) was not given its partitions"
            rng = random.Random(7)
            posted: dict[str, dict[str, Any]] = {}
            url = runners[1].instance.url  # type: ignore[union-attr]
            for n in range(12):  # each on a camera of its own: no storm merges two of them
                alarm = GENERATORS["camera_alarm"](rng) | {"alarm_type": "FIRE_SMOKE", "severity": "HIGH",
                                                           "camera_id": f"ACL-CAM-{n:03d}"}
                answer = httpx.post(f"{url}/camera_alarm", json=alarm, timeout=30,
                                    headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code in (200, 202), answer.text
                posted[alarm["alarm_id"]] = alarm

            def delivered() -> dict[str, dict[str, Any]]:
                bodies = [r.json() for r in endpoint.accepted()]
                return {body["alarm_id"]: body for body in bodies if body.get("alarm_id") in posted}

            deadline = time.monotonic() + 120
            while len(delivered()) < len(posted) and processors.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            yield Pipeline(city, posted, delivered(), log_path, processors.poll())
    finally:
        endpoint.stop()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_bus_principal_runs_processors_and_connectors_with_only_its_grants(pipeline: Pipeline) -> None:
    log = pipeline.processors_log.read_text(errors="replace")
    assert pipeline.processors_exit is None, f"the processors (as User:bus) died:\n{log[-3000:]}"
    assert set(pipeline.delivered) == set(pipeline.posted), (
        f"{len(pipeline.delivered)} of {len(pipeline.posted)} fire alarms reached the fire brigade\n{log[-3000:]}")
    for alarm_id, body in pipeline.delivered.items():
        assert body["camera_id"] == pipeline.posted[alarm_id]["camera_id"]
    assert "AuthorizationFailed" not in log and "AUTHORIZATION_FAILED" not in log, log[-3000:]
    # what went to the fire brigade came through the processors' output, as the topology says
    assert pipeline.city.topology.event_type("camera_alarm").routed_topic.endswith(".enriched")


def test_a_department_tails_its_own_subscriptions_and_nothing_else(pipeline: Pipeline, cluster: SecuredCluster) -> None:
    settings = cluster.kafka.client_settings("fire_brigade").with_registry(pipeline.city.registry_url)
    path = str(pipeline.city.path)
    own = _run_cli(["tail", "--department", "fire_brigade", "--exit", "--topology", path], settings)
    assert own.returncode == 0, own.stderr
    lines = [json.loads(line) for line in own.stdout.splitlines()]
    fire_alarms = pipeline.city.topology.subscription("fire-alarms").topic
    assert {line["topic"] for line in lines} <= {s.topic for s in pipeline.city.topology.subscriptions
                                                 if s.department == "fire_brigade"}
    assert {line["value"]["alarm_id"] for line in lines if line["topic"] == fire_alarms} == set(pipeline.posted)
    canonical = _run_cli(["tail", "camera_alarm", "--exit", "--topology", path], settings)
    assert canonical.returncode == 1 and "User:fire_brigade" in canonical.stderr, canonical.stdout + canonical.stderr
    assert "Traceback" not in canonical.stderr
