"""The live page against the real broker, rendered by a real headless Chromium; its JSON;
its token rule; the dead-letter count; the last hour of lag.

The Chromium test saves a screenshot to ``tests/artifacts/page.png`` (the README's
``docs/page.png`` comes from ``bus up --demo`` through ``ops/screenshot``)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import structlog
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner, Result

import bus.cli.web  # noqa: F401  (adds `bus web` and `bus graph` to the app)
from bus.cli.app import app
from bus.kafka.compacted import AckedProducer, CompactedTopic
from bus.connect.status import ConnectorStatus, StatusStore, now_iso
from bus.kafka.admin import TopicSpec, admin, delete_topics, ensure_topics
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.ops.lag import bus_groups
from bus.topology.models import Topology, topic_name
from bus.topology.names import (
    AVAILABILITY_TOPIC,
    connector_group,
    dlq_topic,
    router_dlq_topic,
    router_group,
    status_topic,
)
from bus.web.cluster import ClusterProvider, DeadLetterCounter
from bus.web.page import PageServer
from bus.serving import ServeError
from tests.fixtures.city import City
from bus.web.state import LagHistory, LagPoint, PageState, StreamLag

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
LAGGING = "fire-dispatch-webhook"  # sink of fire_brigade's fire-alarms: 12 records, committed at 5
CAUGHT_UP = "traffic-checkpoint-webhook"  # sink of traffic_police's watchlist-vehicles: 3 of 3
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def produce(settings: KafkaSettings, topic: str, count: int, *, first_ms: int, step_ms: int = 1000) -> None:
    """One flush per record: the embedded broker's high watermark is right only then (docs/embedded-broker.md)."""
    producer = Producer(producer_config(settings, client_id="page-test-producer"))
    for i in range(count):
        producer.produce(topic, value=f"record {i}".encode(), partition=0, timestamp=first_ms + i * step_ms)
        assert producer.flush(10) == 0


def commit(settings: KafkaSettings, group: str, topic: str, offset: int) -> None:
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="page-test-committer"))
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


@dataclass
class LiveCity:
    topology: Topology
    settings: KafkaSettings
    lagging_topic: str
    caught_up_topic: str


@pytest.fixture
def live_city(city: City) -> Iterator[LiveCity]:
    """The demo city with one sink connector 7 records behind, one caught up, dead letters,
    connector statuses and camera availability on the real broker."""
    topo, settings, ns = city.topology, city.settings, city.topology.namespace
    lagging = topo.subscription(topo.connector(LAGGING).subscription or "").topic
    caught_up = topo.subscription(topo.connector(CAUGHT_UP).subscription or "").topic
    dlq = dlq_topic(ns, LAGGING)
    cameras = topic_name(ns, AVAILABILITY_TOPIC)
    extra = [dlq, router_dlq_topic(topo.namespace), status_topic(ns), cameras]
    groups = [connector_group(ns, LAGGING), connector_group(ns, CAUGHT_UP)]
    ensure_topics(settings, [TopicSpec(lagging), TopicSpec(caught_up), TopicSpec(dlq)])
    now_ms = int(time.time() * 1000)
    produce(settings, lagging, 12, first_ms=now_ms - 120_000)
    commit(settings, groups[0], lagging, 5)
    produce(settings, caught_up, 3, first_ms=now_ms - 10_000)
    commit(settings, groups[1], caught_up, 3)
    producer = AckedProducer(settings, client_id="page-test-dlq")
    for i in range(3):
        producer.send(dlq, key=b"k", value=f"bad {i}".encode())
    producer.close()
    store = StatusStore(settings, ns).ensure()
    store.write(_status(topo, "skynet-platform", "running"))
    store.write(_status(topo, LAGGING, "failed", error="POST https://dispatch.fire.example.gov.cn answered 500"))
    store.close()
    availability = CompactedTopic(settings, cameras).ensure()
    availability.put("all", {"online": 950, "total": 1000, "ratio": 0.95, "at": now_iso()})
    availability.put("CHENGZHONG", {"online": 130, "total": 200, "ratio": 0.65, "at": now_iso()})
    availability.close()
    yield LiveCity(topo, settings, lagging, caught_up)
    delete_topics(settings, extra)
    client = admin(settings)
    for future in client.delete_consumer_groups(groups, request_timeout=10).values():
        future.result(timeout=10)


def _status(topo: Topology, name: str, state: str, error: str | None = None) -> ConnectorStatus:
    c = topo.connector(name)
    return ConnectorStatus(
        name=name, type=c.type, department=c.department, side=c.side, state=state,  # type: ignore[arg-type]
        worker="test-host", updated_at=now_iso(), interval_s=30.0, error=error, counts={"records_out": 4},
    )


@pytest.fixture
def page(live_city: LiveCity) -> Iterator[tuple[PageServer, ClusterProvider]]:
    with ClusterProvider(live_city.topology, live_city.settings, interval_s=1.0) as provider:
        wait_until(lambda: _polls_with_lag(provider) >= 2, 60, "two polls that saw the lagging sink")
        with PageServer(live_city.topology, provider, refresh_s=1.0) as server:
            yield server, provider


def _polls_with_lag(provider: ClusterProvider) -> int:
    row = next((s for s in provider.state().streams if s.group.endswith(LAGGING) and s.lag is not None), None)
    return 0 if row is None else len(row.history)


# -- the JSON ---------------------------------------------------------------------------------------


def test_state_has_lag_dead_letters_connectors_and_cameras(
    page: tuple[PageServer, ClusterProvider], live_city: LiveCity
) -> None:
    server, _ = page
    state = PageState.model_validate(httpx.get(f"{server.url}/api/state").json())
    ns = live_city.topology.namespace
    assert state.problems == []
    streams = {s.group: s for s in state.streams}
    behind = streams[connector_group(ns, LAGGING)]
    assert (behind.department, behind.subscription) == ("fire_brigade", "fire-alarms")
    assert behind.topic == live_city.lagging_topic
    assert behind.lag == 7
    # The first unconsumed record (offset 5) was stamped 115 s before the fixture ran.
    assert behind.lag_seconds is not None and 110 <= behind.lag_seconds <= 300
    assert behind.status != "OK"
    assert len(behind.history) >= 2 and all(p.lag == 7 for p in behind.history)
    current = streams[connector_group(ns, CAUGHT_UP)]
    assert (current.lag, current.status, current.lag_seconds) == (0, "OK", 0.0)
    # The router does not run in this test: the topology's group is NOTFOUND, not silently absent.
    assert streams[router_group(ns)].status == "NOTFOUND" and streams[router_group(ns)].lag is None

    dead = {d.owner: d for d in state.dead_letters}
    assert dead[LAGGING].count == 3 and dead[LAGGING].topic == dlq_topic(ns, LAGGING)
    assert dead["router"].count is None  # no router DLQ topic: nothing ever dead-lettered
    assert dead[CAUGHT_UP].count is None
    assert set(dead) == {"router", *(c.name for c in live_city.topology.connectors)}

    health = {c.name: c for c in state.connectors}
    assert health["skynet-platform"].state == "running" and not health["skynet-platform"].stale
    assert health[LAGGING].state == "failed" and "answered 500" in (health[LAGGING].error or "")
    assert health["case-system-poller"].state == "unknown"

    assert [(c.district, c.online, c.total) for c in state.cameras] == [("all", 950, 1000), ("CHENGZHONG", 130, 200)]


def test_graph_svg_is_served(page: tuple[PageServer, ClusterProvider]) -> None:
    server, _ = page
    answer = httpx.get(f"{server.url}/graph.svg")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    assert 'data-department="fire_brigade"' in answer.text


def test_the_page_references_nothing_outside_this_server(page: tuple[PageServer, ClusterProvider]) -> None:
    server, _ = page
    answer = httpx.get(f"{server.url}/")
    assert answer.status_code == 200
    # The only absolute address allowed is the SVG namespace name, which is never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", answer.text)) <= {SVG_NAMESPACE}
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", answer.text)
    assert "@import" not in answer.text and "url(" not in answer.text
    assert "default-src 'none'" in answer.headers["content-security-policy"]


# -- in a real browser ------------------------------------------------------------------------------


class _Dom(HTMLParser):
    """Rows of the rendered tables (keyed by their data-* attribute, or ``empty:<table id>``
    for the row a table shows when it has nothing) and the graph's nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.nodes: dict[str, str] = {}  # data-* of graph nodes -> class
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._table = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
        elif tag == "tr":
            key = next((f"{k}={v}" for k, v in a.items() if k.startswith("data-")), None)
            if key is None and "empty" in a.get("class", "").split():
                key = f"empty:{self._table}"
            self._row = [] if key is not None else None
            if key is not None:
                self.rows[key] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "g":
            for k in ("data-department", "data-subscription", "data-event-type"):
                if k in a:
                    self.nodes[f"{k}={a[k]}"] = a.get("class", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # The virtual time budget lets the page's script fetch /api/state and render (a few
    # refreshes) before the DOM is dumped or the picture taken.
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=8000",
        "--enable-logging=stderr", "--v=0", *extra, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page's script logged: {console}"  # errors, or CSP refusals
    return done


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                    "(apt-get install chromium): the page cannot be rendered in a real browser")
def test_chromium_renders_graph_lag_dead_letters_connectors_cameras(
    page: tuple[PageServer, ClusterProvider], live_city: LiveCity, tmp_path: Path
) -> None:
    server, _ = page
    ns = live_city.topology.namespace
    dom = _Dom()
    dom.feed(chromium(f"{server.url}/", tmp_path, "--dump-dom").stdout)

    for department in live_city.topology.departments:
        assert any(k.startswith("data-department=" + department.name) for k in dom.nodes), department.name
    for sub in live_city.topology.subscriptions:
        assert f"data-subscription={sub.name}" in dom.nodes
    # The script coloured the subscriptions that have a watched consumer by status.
    assert "status-err" in dom.nodes["data-subscription=fire-alarms"]
    assert "status-ok" in dom.nodes["data-subscription=watchlist-vehicles"]
    assert "status-" not in dom.nodes["data-subscription=deaths"]

    behind = dom.rows[f"data-stream={connector_group(ns, LAGGING)}|{live_city.lagging_topic}"]
    department, what, group, topic, lag, lag_s, status, _spark = behind
    assert (department, what, lag) == ("fire_brigade", "fire-alarms", "7")
    assert float(lag_s) >= 110 and status in ("ERR", "WARN")
    caught_up = dom.rows[f"data-stream={connector_group(ns, CAUGHT_UP)}|{live_city.caught_up_topic}"]
    assert caught_up[4:7] == ["0", "0.0", "OK"]
    assert dom.rows[f"data-stream={router_group(ns)}|"][6] == "NOTFOUND"

    assert dom.rows[f"data-owner={LAGGING}"][3] == "3"
    assert dom.rows["data-owner=router"][3] == "none yet"
    assert dom.rows[f"data-connector={LAGGING}"][3] == "failed"
    assert "answered 500" in dom.rows[f"data-connector={LAGGING}"][5]
    assert dom.rows["data-connector=case-system-poller"][4] == "never reported"
    assert dom.rows["data-district=CHENGZHONG"][1:4] == ["130", "200", "65%"]
    assert dom.rows["data-district=all"][3] == "95%"

    shot = ARTIFACTS / "page.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    chromium(f"{server.url}/", tmp_path, f"--screenshot={shot}", "--window-size=1400,2600", "--hide-scrollbars")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (1400, 2600)


def test_without_any_data_the_page_says_so(city: City, tmp_path: Path) -> None:
    provider = ClusterProvider(city.topology, city.settings, interval_s=1.0)
    try:
        state = provider.poll()
    finally:
        provider.stop()  # closes its reader; the state stays
    assert state.cameras == [] and state.problems == []
    assert all(c.state == "unknown" for c in state.connectors)
    assert all(d.count is None for d in state.dead_letters)
    assert [s.group for s in state.streams] == sorted(bus_groups(city.topology))
    assert all(s.status == "NOTFOUND" for s in state.streams)
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium: the rendering is not checked")
    with PageServer(city.topology, provider, refresh_s=1.0) as server:
        dom = _Dom()
        dom.feed(chromium(f"{server.url}/", tmp_path, "--dump-dom").stdout)
    assert dom.rows["empty:camera-table"] == ["no data: nothing has published camera availability yet"]


# -- dead letters -----------------------------------------------------------------------------------


def test_dead_letters_are_records_not_offsets(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Two dead letters written in two transactions take four offsets (each commit leaves a
    marker): the count says 2, and grows with what is written later."""
    topic = topic_factory("dlq")
    producer = Producer(producer_config(kafka_settings, client_id="page-test-tx",
                                        transactional_id=unique_name("page-test-tx")))
    producer.init_transactions(10)

    def one_transaction(value: bytes) -> None:
        producer.begin_transaction()
        producer.produce(topic, value=value, partition=0)
        producer.commit_transaction(10)

    one_transaction(b"a")
    one_transaction(b"b")
    counter = DeadLetterCounter(kafka_settings)
    try:
        end = Consumer(consumer_config(kafka_settings, group_id="page-test-end", client_id="page-test-end"))
        try:
            assert end.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] >= 3
        finally:
            end.close()
        missing = topic + "-absent"
        assert counter.count([topic, missing]) == {topic: 2}
        one_transaction(b"c")
        assert counter.count([topic]) == {topic: 3}
    finally:
        counter.close()


# -- the last hour ------------------------------------------------------------------------------------


def test_history_keeps_one_hour_and_only_watched_streams() -> None:
    history = LagHistory(span_s=3600)
    for t in range(0, 4000, 100):
        history.add("a", LagPoint(at=float(t), lag=t, lag_seconds=None))
    history.add("b", LagPoint(at=3900.0, lag=1, lag_seconds=0.5))
    history.prune(3900.0, ["a"])
    kept = history.of("a")
    assert kept[0].at == 300.0 and kept[-1].at == 3900.0 and len(kept) == 37
    assert history.of("b") == []


# -- the token rule ------------------------------------------------------------------------------------


class FixedState:
    """A provider as ``bus up`` would give one: any object with ``state()``."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def state(self) -> PageState:
        stream = StreamLag(
            id="g|t", group="g", role="sink", topic="t", department="police", subscription=None, event_type=None,
            partitions=1, lag=4, lag_seconds=1.5, status="WARN", history=[LagPoint(at=1.0, lag=4, lag_seconds=1.5)],
        )
        return PageState(city=self.topology.city.name, namespace=None, at=2.0, interval_s=5.0, streams=[stream])


def test_beyond_loopback_without_a_token_it_refuses_to_start(city: City) -> None:
    with pytest.raises(ServeError, match="BUS_WEB_TOKEN"):
        PageServer(city.topology, FixedState(city.topology), host="0.0.0.0")
    result = invoke(["web", "--topology", str(city.path), "--host", "0.0.0.0", "--port", "0"],
                    env={"BUS_WEB_TOKEN": ""})
    assert isinstance(result.exception, ServeError) and "BUS_WEB_TOKEN" in str(result.exception)


def test_with_a_token_requests_without_it_get_401(city: City) -> None:
    with PageServer(city.topology, FixedState(city.topology), token="s3cret-token") as server:
        for path in ("/", "/api/state", "/graph.svg"):
            assert httpx.get(server.url + path).status_code == 401, path
            wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401, path
            right = httpx.get(server.url + path, headers={"Authorization": "Bearer s3cret-token"})
            assert right.status_code == 200, path
        assert httpx.get(f"{server.url}/?token=wrong").status_code == 401
        with httpx.Client(base_url=server.url) as browser:
            login = browser.get("/?token=s3cret-token")
            assert login.status_code == 303 and login.headers["location"] == "/"
            assert "httponly" in login.headers["set-cookie"].lower()
            assert browser.get("/api/state").json()["streams"][0]["lag"] == 4
            assert browser.get("/").status_code == 200


def test_a_taken_port_is_a_clear_error(city: City) -> None:
    with PageServer(city.topology, FixedState(city.topology)) as first:
        with pytest.raises(ServeError, match=f"127.0.0.1:{first.port}"):
            PageServer(city.topology, FixedState(city.topology), port=first.port).start()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """The command run in this process; the log set-up the root callback changes is put back."""
    saved = structlog.get_config()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        structlog.configure(**saved)


def test_a_broker_that_does_not_answer_is_named_for_each_part(city: City) -> None:
    dead = city.settings.with_broker("127.0.0.1:1", embedded=False).model_copy(update={"connect_timeout_s": 1.0})
    provider = ClusterProvider(city.topology, dead, interval_s=1.0)
    try:
        state = provider.poll()
    finally:
        provider.stop()
    parts = [p.split(" (")[0] for p in state.problems]
    assert parts == ["consumer lag", "dead letters", "connector statuses", "camera availability",
                     "city figures"]
    assert "127.0.0.1:1" in state.problems[0]
    assert state.at is not None and state.streams == [] and state.cameras == []
