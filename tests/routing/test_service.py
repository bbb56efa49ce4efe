"""Topology changes while the router serves: `bus apply` publishes, the routers follow.

Against the real broker and registry: subscriptions added (from now, from the beginning,
from a time), removed and refused while the records of the others keep flowing, each
exactly once and in order.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.admin import delete_topics
from bus.kafka.config import KafkaSettings
from bus.publish import Publisher
from bus.routing.service import RoutingService
from bus.topology.exceptions import TopologyInvalid
from bus.topology.names import topology_topic
from bus.topology.published import Bundle, publish_topology
from tests.fixtures.city import REPO
from tests.routing.test_router import wait_until
from bus.topology.validate import load_topology

ENV = {"BUS_HASH_MASTER_KEY": "service-test"}


def _sub(name: str, **extra) -> dict:
    return {"name": name, "department": "city_management", "event_type": "camera_status",
            "description": f"{name} (test)", **extra}


class Cities:
    """Versions of one small topology, written to the same file as `bus apply` would see it."""

    def __init__(self, tmp_path: Path, namespace: str) -> None:
        self.path = tmp_path / "topology.yaml"
        self.namespace = namespace
        self.topics: set[str] = set()

    def write(self, subscriptions: list[dict]):
        doc = {
            "version": 1, "city": {"name": "Small"}, "namespace": self.namespace,
            "schemas_dir": str(REPO / "schemas"),
            "departments": [{"name": "police", "title": "Police"},
                            {"name": "city_management", "title": "City management"}],
            "event_types": [{"name": "camera_status", "schema": "surveillance/camera_status.avsc",
                             "owner": "police", "key": "camera_id", "partitions": 3}],
            "subscriptions": subscriptions,
        }
        with self.path.open("w") as out:
            YAML().dump(doc, out)
        topology = load_topology(self.path)
        self.topics |= {et.topic for et in topology.event_types} | {s.topic for s in topology.subscriptions}
        return topology


@pytest.fixture
def cities(tmp_path: Path, registry_settings: KafkaSettings, unique_name) -> Iterator[Cities]:
    made = Cities(tmp_path, unique_name("svc").replace("-", "_").lower())
    yield made
    delete_topics(registry_settings, sorted(made.topics) + [topology_topic(made.namespace),
                                                             f"{made.namespace}.bus-router-dlq"])


def _publish(topology, settings: KafkaSettings, n: int, seed: int) -> list[tuple[int, str]]:
    """(partition, CloudEvents id) of each record published, in order."""
    rng = random.Random(seed)
    with Publisher(topology, settings) as publisher:
        published = [publisher.publish("camera_status", "police", GENERATORS["camera_status"](rng)
                                       | {"status": "OFFLINE" if i % 2 else "ONLINE"}) for i in range(n)]
    return [(p.partition, p.ce_id) for p in published]


def _ids(settings: KafkaSettings, topic: str) -> list[tuple[int, str]]:
    return [(g.partition, g.headers["ce_id"]) for g in tail(settings, [topic], exit_at_end=True)]


def _per_partition(records: list[tuple[int, str]]) -> dict[int, list[str]]:
    """Order holds per partition (outputs keep their source partition)."""
    out: dict[int, list[str]] = {}
    for partition, ce_id in records:
        out.setdefault(partition, []).append(ce_id)
    return out


def _holds(settings: KafkaSettings, topic: str, expected: list[tuple[int, str]]) -> None:
    got = _ids(settings, topic)
    assert len(got) == len(set(got)), f"{topic}: duplicates"
    assert _per_partition(got) == _per_partition(expected), topic


def test_subscriptions_added_and_removed_while_routing(cities: Cities, registry_settings: KafkaSettings) -> None:
    settings = registry_settings
    v1 = cities.write([_sub("mirror"), _sub("offline", filter={"field": "status", "eq": "OFFLINE"})])
    first = _publish(v1, settings, 20, seed=1)
    offline_first = first[1::2]

    with RoutingService(v1, settings, environ=ENV) as service:
        assert service.wait_assigned(60)
        wait_until(lambda: len(_ids(settings, v1.subscription("mirror").topic)) == 20, what="first records routed")
        since = dt.datetime.now(dt.timezone.utc)
        v2 = cities.write([
            _sub("mirror"),
            _sub("late", fields=["camera_id", "status", "reported_at"]),  # start: now
            _sub("history", start="earliest"),
            _sub("since", start=since.isoformat(timespec="milliseconds")),
        ])
        _, digest = publish_topology(settings, cities.path)
        wait_until(lambda: digest in service.applied, what="the published topology applied")
        wait_until(lambda: "late" in service.routers[None].subscriptions, what="the shared router to swap routes")
        assert set(service.routers) == {None, "history", "since"}
        second = _publish(v2, settings, 20, seed=2)
        wait_until(lambda: len(_ids(settings, v2.subscription("history").topic)) == 40, what="history backfilled")
        wait_until(lambda: len(_ids(settings, v2.subscription("since").topic)) == 20, what="since backfilled")
        wait_until(lambda: len(_ids(settings, v2.subscription("late").topic)) == 20, what="late routed")
        wait_until(lambda: len(_ids(settings, v2.subscription("mirror").topic)) == 40, what="mirror routed")

        # Changing the start of an existing subscription is refused; routing goes on.
        cities.write([_sub("mirror", start="earliest"), _sub("late"), _sub("history", start="earliest"),
                      _sub("since", start=since.isoformat(timespec="milliseconds"))])
        publish_topology(settings, cities.path)
        wait_until(lambda: service.refused, what="the refusal")
        assert "mirror" in service.refused[0] and "start" in service.refused[0]
        third = _publish(v2, settings, 4, seed=3)
        wait_until(lambda: len(_ids(settings, v2.subscription("mirror").topic)) == 44, what="routing after a refusal")

    # Every subscription holds exactly what it is entitled to from its start, once, in order.
    _holds(settings, v2.subscription("mirror").topic, first + second + third)
    _holds(settings, v2.subscription("history").topic, first + second + third)
    _holds(settings, v2.subscription("since").topic, second + third)
    _holds(settings, v2.subscription("late").topic, second + third)
    _holds(settings, v1.subscription("offline").topic, offline_first)  # removed: nothing after
    assert service.routers[None].subscriptions == ["mirror", "late"]


def test_a_lane_resumes_from_its_own_commits(cities: Cities, registry_settings: KafkaSettings) -> None:
    """A restarted lane continues where it committed: the start point applies to a new group only."""
    settings = registry_settings
    topology = cities.write([_sub("history", start="earliest")])
    first = _publish(topology, settings, 10, seed=4)
    topic = topology.subscription("history").topic
    with RoutingService(topology, settings, environ=ENV, watch=False) as service:
        assert service.wait_assigned(60)
        wait_until(lambda: len(_ids(settings, topic)) == 10, what="backfill")
    second = _publish(topology, settings, 10, seed=5)
    with RoutingService(topology, settings, environ=ENV, watch=False):
        wait_until(lambda: len(_ids(settings, topic)) >= 20, what="the restarted lane")
    _holds(settings, topic, first + second)


def test_a_bad_topology_is_never_published(cities: Cities, registry_settings: KafkaSettings, tmp_path: Path) -> None:
    cities.write([_sub("mirror")])
    text = cities.path.read_text().replace("camera_status.avsc", "no_such.avsc")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(TopologyInvalid):
        publish_topology(registry_settings, bad)


def test_a_bundle_loads_from_its_own_copy_of_the_schemas(cities: Cities) -> None:
    topology = cities.write([_sub("mirror")])
    bundle = Bundle.of(cities.path)
    assert "surveillance/camera_status.avsc" in bundle.schemas
    loaded = Bundle.from_bytes(bundle.to_bytes()).load()
    assert [s.name for s in loaded.subscriptions] == ["mirror"]
    assert loaded.schema_for("camera_status").schema == topology.schema_for("camera_status").schema
    evil = Bundle(bundle.yaml, "schemas", {"../../escape.avsc": "{}"})
    with pytest.raises(Exception, match="outside its folder"):
        evil.load()


def test_a_failed_router_runs_again_by_itself_with_nothing_lost_or_repeated(
    cities: Cities, registry_settings: KafkaSettings,
) -> None:
    """A router that fails mid-transaction (as after a fenced producer or a broker away for
    too long) is run again by the service: its open transaction is aborted, and the
    subscription still holds every record once, in order."""
    from bus.routing.exceptions import RoutingError

    settings = registry_settings
    topology = cities.write([_sub("mirror")])
    published = _publish(topology, settings, 30, seed=6)
    topic = topology.subscription("mirror").topic
    service = RoutingService(topology, settings, environ=ENV, watch=False, batch_size=10)
    router = service.routers[None]
    route_one, calls = router._route_one, [0]

    def failing_once(msg) -> None:  # noqa: ANN001
        calls[0] += 1
        if calls[0] == 15:  # the second transaction has written 4 outputs, uncommitted
            raise RoutingError("injected: this router's producer was fenced")
        route_one(msg)

    router._route_one = failing_once  # type: ignore[method-assign]
    with service:
        wait_until(lambda: service.restarts.get(None) == 1, what="the failure")
        wait_until(lambda: len(set(_ids(settings, topic))) == 30, what="every record routed after the restart")
    assert service.restarts == {None: 1}
    _holds(settings, topic, published)
