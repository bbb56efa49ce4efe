"""No secret ever reaches a log line.

One test runs a realistic slice of the bus with known secrets in its environment and
captures every line it logs: in this process (structlog through the bus's own logging
set-up, the standard library's loggers and librdkafka's, all at DEBUG) an ingest
connector taking good and bad credentials, a signing webhook sink whose endpoint fails
before it accepts, a PostgreSQL sink whose DSN holds a password, Kafka clients with a
SASL password, the ops endpoints and the page behind BUS_WEB_TOKEN; beside it, two
`bus up --exit-after-start` children at DEBUG with the same secrets (their stdout, stderr
and processors' log): one with `--demo` (which gives the connectors the secrets of its
simulated systems, so the topology's connector secrets are proven by the other), one
without, whose connectors take the secrets given. No secret value, no DSN password,
appears in any line.

A second test renders an exception on a terminal (the console renderer), where tracebacks
used to show every frame's local variables, a DSN with its password among them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
from confluent_kafka import Producer
from pydantic import SecretStr

from bus.connect import ConnectorRunner
from bus.connect.exceptions import ConnectorError
from bus.connect.signing import sign, sign_request
from bus.demo.samples import GENERATORS
from bus.kafka.broker import free_port
from bus.kafka.config import producer_config
from bus.logs import configure
from bus.ops.metrics import BusMonitor
from bus.topology.models import Connector
from bus.web.ops import OpsServer
from bus.web.page import PageServer
from tests.connectors.support import (
    Endpoint,
    all_entry_points,
    produce_wire_records,
    wait_until,
)
from tests.fixtures.city import City
from bus.web.state import PageState

pytestmark = pytest.mark.integration  # starts its own brokers

REPO = Path(__file__).resolve().parents[2]
BUS = [sys.executable, "-m", "bus"]


def secret(name: str) -> str:
    return f"{name.lower().replace('_', '-')}-{secrets.token_hex(8)}"


#: What a city sets in the environment of `bus up` (the shipped topology's references and
#: the bus's own settings), each a fresh value of this run.
SECRET_NAMES = ["SKYNET_INGEST_TOKEN", "SKYNET_INGEST_HMAC_KEY", "FIRE_DISPATCH_HMAC_KEY",
                "TRAFFIC_CHECKPOINT_HMAC_KEY", "EMERGENCY_WALL_HMAC_KEY", "LIUNAN_WEBHOOK_HMAC_KEY",
                "BUS_HASH_MASTER_KEY", "BUS_WEB_TOKEN", "BUS_SASL_PASSWORD", "BUS_REGISTRY_PASSWORD"]


@pytest.fixture
def city_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every secret set in this process's environment; DSN passwords listed under the
    DSN's name + ``:password``."""
    values = {name: secret(name) for name in SECRET_NAMES}
    passwords = {name: secret("pgpw") for name in
                 ("POPULATION_BASE_DSN", "STATS_POPULATION_BASE_DSN", "HEALTH_POPULATION_BASE_DSN")}
    dsns = {
        # Absent databases on the real server (its trust authentication ignores passwords):
        # each connector fails to start and says why.
        "POPULATION_BASE_DSN": f"postgresql://postgres:{passwords['POPULATION_BASE_DSN']}@127.0.0.1:5432/"
                               f"no_such_db_{secrets.token_hex(4)}",
        "STATS_POPULATION_BASE_DSN": f"host=127.0.0.1 port=5432 dbname=absent_{secrets.token_hex(4)} user=postgres "
                                     f"password={passwords['STATS_POPULATION_BASE_DSN']}",
        "HEALTH_POPULATION_BASE_DSN": f"postgresql://postgres:{passwords['HEALTH_POPULATION_BASE_DSN']}@127.0.0.1:1/x",
    }
    for name, value in {**values, **dsns}.items():
        monkeypatch.setenv(name, value)
    return values | {f"{name}:password": password for name, password in passwords.items()}


@contextmanager
def every_log_line(*, json_lines: bool = True) -> Iterator[io.StringIO]:
    """Everything the bus logs in this process, at DEBUG, through its own logging set-up
    (redaction included), and every standard-library logger's lines (librdkafka's too)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_level = root.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_not_the_tests_own_client)
    stderr, sys.stderr = sys.stderr, out  # the bus logs to stderr: here, to `out`
    try:
        configure("DEBUG", json=json_lines)
    finally:
        sys.stderr = stderr
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved)


def _not_the_tests_own_client(record: logging.LogRecord) -> bool:
    """The test's HTTP calls (httpx from the main thread) are the departments' and the
    browser's side: they send the secrets, and httpx logs its requests' addresses. The
    bus's own httpx calls run on its threads and are kept."""
    client = record.name.split(".")[0] in ("httpx", "httpcore")
    return not (client and record.thread == threading.main_thread().ident)


def leaks(text: str, values: dict[str, str]) -> dict[str, list[str]]:
    """Per secret, the lines of ``text`` that hold it."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        for name, value in values.items():
            if value in line:
                found.setdefault(name, []).append(line[:300])
    return found


@dataclass
class BusUp:
    """A `bus up --exit-after-start` child at DEBUG; its output goes to files in ``folder``
    (a pipe left unread would stall it), and so does its processors' log (TMPDIR)."""

    folder: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, folder: Path, *args: str) -> BusUp:
        folder.mkdir()
        env = {k: v for k, v in os.environ.items() if not (k.startswith("BUS_") and k not in SECRET_NAMES)}
        env.update(BUS_LOG_LEVEL="DEBUG", BUS_SASL_USERNAME="bus-user", BUS_REGISTRY_USERNAME="bus-registry-user",
                   TMPDIR=str(folder))
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            process = subprocess.Popen(
                [*BUS, "up", *args, *(() if "--demo" in args else ("--data", str(folder / "kafka-data"))),
                 "--exit-after-start", "--broker-port", str(free_port()), "--registry-port",
                 str(free_port()), "--web-port", str(free_port()), "--page-port", str(free_port())],
                cwd=REPO, env=env, stdout=out, stderr=err,
            )
        return cls(folder, process)

    def finish(self, timeout_s: float) -> tuple[str, str, str]:
        """(stdout, stderr, processors' log) once it exited 0."""
        self.process.wait(timeout_s)
        stdout, stderr = ((self.folder / name).read_text(errors="replace") for name in ("stdout", "stderr"))
        assert self.process.returncode == 0, (stdout[-2000:], stderr[-3000:])
        processors = "".join(p.read_text(errors="replace") for p in self.folder.glob("bus-processors-*.log"))
        return stdout, stderr, processors

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class FixedState:
    def __init__(self, city: City) -> None:
        self.city = city

    def state(self) -> PageState:
        return PageState(city=self.city.topology.city.name, namespace=None, at=1.0, interval_s=5.0)


def test_a_slice_of_the_bus_logs_no_secret(
    city: City, city_secrets: dict[str, str], topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    demo = BusUp.start(tmp_path / "demo", "--demo", "--samples", "2")
    plain = BusUp.start(tmp_path / "plain")  # its connectors take the secrets set here
    runners: list[ConnectorRunner] = []

    def run(spec: dict, **kwargs: object) -> ConnectorRunner:
        runner = ConnectorRunner(Connector.model_validate(spec), city.topology, city.settings,
                                 entry_points=all_entry_points(), **kwargs)  # type: ignore[arg-type]
        runners.append(runner)
        return runner.start()

    try:
        with every_log_line() as out:
            # The ingest connector: right, wrong (the token with one more character) and
            # missing credentials, a signed body, a forbidden type, a malformed body.
            ingest = run({"name": "skynet-platform", "type": "http_ingest", "department": "police",
                          "publishes": ["camera_alarm", "camera_status"],
                          "config": {"port": 0, "auth": {"token": "env:SKYNET_INGEST_TOKEN",
                                                         "hmac_key": "env:SKYNET_INGEST_HMAC_KEY"}}})
            url = ingest.instance.url  # type: ignore[union-attr]
            token, key = city_secrets["SKYNET_INGEST_TOKEN"], city_secrets["SKYNET_INGEST_HMAC_KEY"]
            alarm = json.dumps(GENERATORS["camera_alarm"](random.Random(1))).encode()
            signed = sign_request(key, alarm)
            answers = [
                httpx.post(f"{url}/camera_alarm", content=alarm, headers={"Authorization": f"Bearer {token}"}),
                httpx.post(f"{url}/camera_alarm", content=alarm, headers={"Authorization": f"Bearer {token}x"}),
                httpx.post(f"{url}/camera_alarm", content=alarm, headers={"Authorization": f"Basic {token}"}),
                httpx.post(f"{url}/camera_alarm", content=alarm, headers=signed),
                httpx.post(f"{url}/camera_alarm", content=alarm + b" ", headers=signed),
                httpx.post(f"{url}/city_case", content=alarm, headers={"Authorization": f"Bearer {token}"}),
                httpx.post(f"{url}/camera_alarm", content=b'{"camera_id": ',
                           headers={"Authorization": f"Bearer {token}"}),
            ]
            assert [a.status_code for a in answers] == [202, 401, 401, 202, 401, 403, 400]

            # A signing webhook sink whose endpoint fails twice before it accepts.
            topic = topic_factory("sub")
            produce_wire_records(city.settings, city.topology, topic,
                                 [GENERATORS["camera_alarm"](random.Random(i)) for i in range(3)])
            endpoint = Endpoint(hmac_key=city_secrets["FIRE_DISPATCH_HMAC_KEY"],
                                answer=lambda n, h, b: 500 if n < 2 else 200).start()
            try:
                run({"name": "fire-dispatch-webhook", "type": "http_webhook_sink", "department": "fire_brigade",
                     "subscription": "fire-alarms",
                     "config": {"url": endpoint.url, "hmac_key": "env:FIRE_DISPATCH_HMAC_KEY", "timeout_s": 5,
                                "errors.retry.delay.max.ms": 300}}, topic=topic)
                wait_until(lambda: len(endpoint.accepted()) >= 3, 30, "the webhook deliveries")
                assert all(endpoint.signed(r) for r in endpoint.accepted())
            finally:
                endpoint.stop()

            # A PostgreSQL sink whose DSN (with a password) names an absent database.
            with pytest.raises(ConnectorError, match="cannot connect to PostgreSQL"):
                run({"name": "statistics-population-base", "type": "postgres_sink", "department": "statistics",
                     "subscription": "population-statistics",
                     "config": {"dsn": "env:STATS_POPULATION_BASE_DSN", "table": "stats.population_change",
                                "connect_timeout_s": 3}}, topic=topic)

            # Kafka clients configured with a SASL password (ignored by this PLAINTEXT broker).
            sasl = city.settings.model_copy(update={
                "sasl_username": "bus-user", "sasl_password": SecretStr(city_secrets["BUS_SASL_PASSWORD"])})
            producer = Producer(producer_config(sasl, client_id="test-sasl-settings"))
            producer.produce(topic, b"x")
            assert producer.flush(10) == 0
            structlog.get_logger("test").info("settings in use", settings=sasl)

            # The ops endpoints and the page behind BUS_WEB_TOKEN: wrong and right tokens.
            web_token = city_secrets["BUS_WEB_TOKEN"]
            with OpsServer(BusMonitor(), {}, token=web_token) as ops, \
                    PageServer(city.topology, FixedState(city), token=web_token) as page:
                for given, status in ((f"Bearer {web_token}0", 401), (f"Bearer {web_token}", 200)):
                    assert httpx.get(f"{ops.url}/metrics", headers={"Authorization": given}).status_code == status
                assert httpx.get(f"{page.url}/?token={web_token}0").status_code == 401
                assert httpx.get(f"{page.url}/?token={web_token}").status_code == 303

            for runner in runners:
                runner.stop()
            runners.clear()
        in_process = out.getvalue()
        demo_out, demo_err, demo_processors = demo.finish(240)
        plain_out, plain_err, plain_processors = plain.finish(240)
    finally:
        for runner in runners:
            runner.stop()
        demo.kill()
        plain.kill()

    # The capture saw the slice: these lines are there, so a leak would have been too.
    for expected in ('"event": "ingest unauthenticated"', '"event": "ingest refused"', '"event": "connector error"',
                     "CONFWARN", '"event": "page serving"', "cannot connect to PostgreSQL"):
        assert expected in in_process, f"{expected} not captured"
    # (skynet-platform runs, or is left out if another program holds its port, 8088.)
    for expected in ("ready: broker", "status:", "(token required)"):
        assert expected in demo_out, f"{expected} not in the output of bus up --demo"
    for expected in ("ready: broker", "(token required)", "skynet-platform (http_ingest",
                     "population-base-cdc (postgres_source) NOT started", "cannot connect to PostgreSQL"):
        assert expected in plain_out, f"{expected} not in the output of bus up"
    assert '"event": "embedded broker started"' in demo_err + plain_err  # their structured log lines

    for where, text in (("this process", in_process), ("bus up --demo stdout", demo_out),
                        ("bus up --demo stderr", demo_err), ("bus up --demo processors' log", demo_processors),
                        ("bus up stdout", plain_out), ("bus up stderr", plain_err),
                        ("bus up processors' log", plain_processors)):
        assert not leaks(text, city_secrets), f"secrets in {where}: {leaks(text, city_secrets)}"


def test_an_exception_rendered_on_a_terminal_shows_no_local_variables() -> None:
    """The console renderer (used on a terminal) drew rich tracebacks with every frame's
    locals: here psycopg's ``conninfo``, the DSN with its password."""
    psycopg = pytest.importorskip("psycopg")
    password = secret("pgpw")
    dsn = f"postgresql://postgres:{password}@127.0.0.1:1/x?connect_timeout=2"
    with every_log_line(json_lines=False) as out:
        try:
            psycopg.connect(dsn)
        except psycopg.OperationalError:
            structlog.get_logger("test").exception("database unreachable")
    text = out.getvalue()
    assert "database unreachable" in text and "OperationalError" in text  # the traceback is there
    assert password not in text, re.findall(rf".*{password}.*", text)[:3]
