"""The REST poller against a real case-system endpoint on loopback, the real broker and
registry: first poll, incremental polls, ties, restarts, Retry-After, failures, bad
items, bad configs and the token."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from structlog.testing import capture_logs

from bus.connect import (
    ConnectorConfigInvalid,
    ConnectorFailed,
    ConnectorRunner,
    OffsetStore,
    config_problems,
    parse_config,
)
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.topology.models import Connector
from connectors.rest_poller import Cursor, RestPollerConfig, epoch_ms, iso_ms
from tests.connectors.rest_server import CaseServer, to_ms
from tests.connectors.support import entry_points, read_all, wait_until
from tests.fixtures.city import City
from bus.topology.names import dlq_topic

NAME = "case-system-poller"


def poller_entry_points() -> list[EntryPoint]:
    return [*entry_points(), EntryPoint("rest_poller", "connectors.rest_poller:RestPoller", "bus.connectors")]


def case_id(n: int) -> str:
    """UUIDs whose string order is their number's order."""
    return f"00000000-0000-4000-8000-{n:012d}"


def case(n: int, at: str | int, **fields: Any) -> dict[str, Any]:
    record = GENERATORS["city_case"](random.Random(n))
    record.update(case_id=case_id(n), updated_at=at, **fields)
    return record


def later(ms: int) -> str:
    """08:30 (UTC+8) plus ``ms`` milliseconds, as the case system writes its times."""
    return f"2026-11-23T08:30:{ms // 1000:02d}.{ms % 1000:03d}+08:00"


@pytest.fixture
def server() -> Iterator[CaseServer]:
    started = CaseServer().start()
    yield started
    started.stop()


@pytest.fixture
def poller(connector_city: City, server: CaseServer) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []

    def make(**config: Any) -> ConnectorRunner:
        connector = Connector.model_validate({
            "name": NAME, "type": "rest_poller", "department": "city_management", "publishes": ["city_case"],
            "config": {"url": server.url, "interval_s": 0.2, "timeout_s": 2, "errors.retry.delay.max.ms": 100,
                       **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings,
                                 entry_points=poller_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def published(runner: ConnectorRunner) -> int:
    return runner.status().counts.get("published", 0)


def on_topic(city: City) -> list[tuple[str, str, str]]:
    """(case_id, updated_at, status) of every city_case record, sorted (the topic has
    several partitions: only a key's records keep their order)."""
    records = tail(city.settings, [city.topology.event_type("city_case").topic], exit_at_end=True)
    return sorted((r.value["case_id"], r.value["updated_at"], r.value["status"]) for r in records)


def ids(got: list[tuple[str, str, str]]) -> list[str]:
    return [g[0] for g in got]


def expected(*numbers: int) -> list[str]:
    return sorted(case_id(n) for n in numbers)


def polls_after(server: CaseServer, count: int) -> Callable[[], bool]:
    """True once the server got ``count`` more requests than it has now (the poller went round)."""
    start = len(server.requests())
    return lambda: len(server.requests()) >= start + count


# -- pure logic ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-23T00:30:00.123Z", 1795393800123),
    ("2026-11-23T08:30:00.123+08:00", 1795393800123),
    ("2026-11-23T00:30:00.123999Z", 1795393800123),  # truncated to the millisecond
    (1795393800123, 1795393800123),
])
def test_cursor_times_are_epoch_milliseconds(value: Any, expected: int) -> None:
    assert epoch_ms(value) == expected
    assert iso_ms(expected) == "2026-11-23T00:30:00.123Z"


@pytest.mark.parametrize(("value", "problem"), [
    ("2026-11-23T00:30:00", "no UTC offset"),
    ("yesterday", "not an RFC 3339 time"),
    (True, "expected an RFC 3339 time or epoch milliseconds"),
    (1795393800.5, "expected an RFC 3339 time or epoch milliseconds"),
])
def test_bad_cursor_times_say_what_is_wrong(value: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        epoch_ms(value)


def test_positions_order_by_time_then_id() -> None:
    ordered = [Cursor(1, 9), Cursor(1, 10), Cursor(1, "a"), Cursor(1, "b"), Cursor(2, "a")]
    assert sorted(ordered, key=lambda c: c.key) == ordered
    assert Cursor(5, "x").position() == {"updated_since": "1970-01-01T00:00:00.005Z", "after_id": "x"}


# -- configuration ---------------------------------------------------------------------------

GOOD = {"url": "https://chengguan.example.gov.cn/api/cases/changes", "interval_s": 10}


@pytest.mark.parametrize(("config", "loc", "message"), [
    (GOOD | {"url": "ftp://chengguan.example.gov.cn/cases"}, ("config", "url"), "string should match pattern"),
    (GOOD | {"interval_s": 0}, ("config", "interval_s"), "greater than 0"),
    (GOOD | {"intervall_s": 5}, ("config", "intervall_s"), "did you mean 'interval_s'?"),
    (GOOD | {"bearer_token": "s3cr3t-in-clear"}, ("config", "bearer_token"), "never written in clear"),
    (GOOD | {"limit": 0}, ("config", "limit"), "greater than or equal to 1"),
    ({"interval_s": 10}, ("config", "url"), "missing required key 'url'"),
], ids=["scheme", "interval", "typo", "clear token", "limit", "no url"])
def test_bad_configs_are_clear_errors(config: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    problems = config_problems("rest_poller", config, entry_points=poller_entry_points())
    assert len(problems) == 1, problems
    assert problems[0][0] == loc
    assert message in problems[0][1]
    assert "s3cr3t-in-clear" not in problems[0][1]


def test_the_shipped_topology_entry_is_valid_and_a_missing_token_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert config_problems("rest_poller", GOOD, entry_points=poller_entry_points()) == []
    monkeypatch.delenv("CHENGGUAN_API_TOKEN", raising=False)
    with pytest.raises(ConnectorConfigInvalid) as caught:
        parse_config(RestPollerConfig, NAME, GOOD | {"bearer_token": "env:CHENGGUAN_API_TOKEN"})
    assert "the environment variable CHENGGUAN_API_TOKEN is not set" in str(caught.value)


# -- polling ---------------------------------------------------------------------------------


def test_the_first_poll_publishes_every_case_and_later_changes_are_picked_up_incrementally(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    first = [case(n, later(n * 10) if n % 2 else to_ms(later(n * 10))) for n in range(1, 8)]  # ISO and epoch ms
    server.put(*first)
    runner = poller(limit=3).start()
    wait_until(lambda: published(runner) == 7, 20, "the seven cases")
    opening = server.requests()
    assert "updated_since" not in opening[0].params and opening[0].params["limit"] == "3"
    assert opening[1].params == {"updated_since": iso_ms(to_ms(later(30))), "after_id": case_id(3), "limit": "3"}

    changed = case(2, later(500), status="CLOSED")
    server.put(changed, case(9, later(600)))
    wait_until(lambda: published(runner) == 9, 20, "the changed and the new case")
    asked = [r.params for r in server.requests()[len(opening):] if "after_id" in r.params]
    assert asked[0]["after_id"] == case_id(7) and asked[0]["updated_since"] == iso_ms(to_ms(later(70)))

    got = on_topic(connector_city)
    assert len(set(got)) == 9
    assert ids(got) == expected(1, 2, 3, 4, 5, 6, 7, 2, 9)
    assert (case_id(2), iso_ms(to_ms(later(500))), "CLOSED") in got
    wait_until(lambda: runner.status().position == {"updated_since": iso_ms(to_ms(later(600))),
                                                     "after_id": case_id(9)}, 10, "the stored position")


def test_cases_of_the_same_millisecond_are_neither_lost_nor_repeated_across_pages_and_polls(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.put(*[case(n, later(100)) for n in (10, 20, 30, 40, 50)], case(5, later(99)))
    runner = poller(limit=2).start()
    wait_until(lambda: published(runner) == 6, 20, "the six cases")
    # more cases of the same millisecond, after the last id taken, and one just after it
    server.put(case(60, later(100)), case(70, later(100)), case(1, later(101)))
    wait_until(lambda: published(runner) == 9, 20, "the three new cases")
    wait_until(polls_after(server, 2), 10, "two more polls")
    assert ids(on_topic(connector_city)) == expected(5, 10, 20, 30, 40, 50, 60, 70, 1)
    assert runner.status().detail["skipped"] == 0


def test_a_server_that_ignores_after_id_gets_its_repeats_skipped(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.ignore_after_id = True  # answers every case at or after updated_since
    server.put(*[case(n, later(100)) for n in (1, 2, 3)])
    runner = poller().start()
    wait_until(lambda: published(runner) == 3, 20, "the three cases")
    wait_until(polls_after(server, 3), 10, "three more polls")
    assert published(runner) == 3
    assert runner.status().detail["skipped"] >= 3
    assert ids(on_topic(connector_city)) == expected(1, 2, 3)


def test_a_restart_resumes_from_the_stored_position_without_gaps_or_repeats(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.put(*[case(n, later(n)) for n in (1, 2, 3)], case(4, later(3)))
    first = poller(limit=2).start()
    wait_until(lambda: published(first) == 4, 20, "the first four cases")
    first.stop()
    store = OffsetStore(connector_city.settings, connector_city.topology.namespace)
    try:
        stored = store.load(NAME)
    finally:
        store.close()
    assert stored == {"updated_since": iso_ms(to_ms(later(3))), "after_id": case_id(4)}

    # while it is down: a tie after the last id, a later case, a change of an old case
    server.put(case(5, later(3)), case(6, later(7)), case(1, later(9), status="RESOLVED"))
    asked_before = len(server.requests())
    second = poller(limit=2).start()
    wait_until(lambda: published(second) == 3, 20, "the three cases written while it was down")
    resumed = server.requests()[asked_before]
    assert resumed.params == {"updated_since": stored["updated_since"], "after_id": case_id(4), "limit": "2"}
    wait_until(polls_after(server, 2), 10, "two more polls")
    got = on_topic(connector_city)
    assert ids(got) == expected(1, 2, 3, 4, 5, 6, 1)
    assert len(set(got)) == 7 and (case_id(1), iso_ms(to_ms(later(9))), "RESOLVED") in got


def test_a_stored_position_that_is_not_a_cursor_is_a_clear_error_at_start(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    store = OffsetStore(connector_city.settings, connector_city.topology.namespace).ensure()
    try:
        store.save(NAME, {"offset": 12})
    finally:
        store.close()
    with pytest.raises(ConnectorFailed, match=r"is not \{updated_since, after_id\}.*remove the connector's key"):
        poller().start()
    assert server.requests() == []


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner], status: int,
) -> None:
    server.put(*[case(n, later(n)) for n in (1, 2, 3)])
    server.fail(0, status, retry_after="1")
    server.fail(1, status, retry_after="1")
    runner = poller().start()  # its own backoff waits at most 0.1 s (errors.retry.delay.max.ms: 100)
    wait_until(lambda: published(runner) == 3, 20, "the three cases")
    log = server.requests()
    assert [r.outcome for r in log[:3]] == [str(status), str(status), "200"]
    assert log[1].at - log[0].at >= 1.0
    assert log[2].at - log[1].at >= 1.0
    assert runner.status().counts["retries"] == 2


def test_dropped_connections_and_server_errors_are_retried_without_loss(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.put(*[case(n, later(n)) for n in range(1, 7)])
    server.drop(1)  # the second page: cut in the middle of the answer, twice
    server.drop(2)
    server.fail(3, 500)
    server.fail(4, 502)
    runner = poller(limit=2).start()
    wait_until(lambda: published(runner) == 6, 20, "the six cases")
    log = server.requests()
    assert [r.outcome for r in log[:6]] == ["200", "dropped", "dropped", "500", "502", "200"]
    assert len({r.target for r in log[1:6]}) == 1  # the same page asked again
    assert runner.status().counts["retries"] == 4
    wait_until(polls_after(server, 2), 10, "two more polls")
    assert ids(on_topic(connector_city)) == expected(*range(1, 7))
    assert runner.state == "running" and runner.status().detail["last_error"] is None


def test_a_spent_retry_budget_is_reported_once_and_the_poller_keeps_asking(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.put(case(1, later(1)))
    for number in range(3):
        server.fail(number, 500)
    runner = poller(**{"errors.retry.timeout": 0}).start()  # no retry budget at all
    wait_until(lambda: published(runner) == 1, 20, "the case")
    counts = runner.status().counts
    assert counts["errors"] == 1 and counts["retries"] == 3
    assert runner.state == "running"


def test_bad_items_go_to_the_dead_letter_topic_with_context_and_the_poller_goes_on(
    connector_city: City, server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.put(case(1, later(1)), case(2, later(2), status="ON FIRE"), case(4, later(4)))
    server.put_raw({"case_id": case_id(3), "title": "no time"}, to_ms(later(3)), case_id(3))
    server.put_raw("not an object", to_ms(later(5)), case_id(5))  # last: asked for again at every poll
    runner = poller().start()
    wait_until(lambda: published(runner) == 2, 20, "the two good cases")
    topic = dlq_topic(connector_city.topology.namespace, NAME)
    letters = read_all(connector_city.settings, topic, 3)
    assert len(letters) == 3
    by_key = {m.key(): m for m in letters}
    assert set(by_key) == {case_id(2).encode(), case_id(3).encode(), None}
    invalid = {k: v.decode() for k, v in by_key[case_id(2).encode()].headers()}
    assert json.loads(by_key[case_id(2).encode()].value())["status"] == "ON FIRE"
    assert invalid["__connect.errors.topic"].startswith(server.url + "?limit=100")
    assert invalid["rest_url"] == invalid["__connect.errors.topic"]
    assert invalid["__connect.errors.stage"] == "TASK_POLL"
    assert invalid["__connect.errors.connector.name"] == NAME
    assert "status" in invalid["__connect.errors.exception.message"]
    assert invalid["__connect.errors.exception.class.name"] == "connectors.rest_poller.ItemInvalid"
    no_time = {k: v.decode() for k, v in by_key[case_id(3).encode()].headers()}
    assert "no 'updated_at' field" in no_time["__connect.errors.exception.message"]
    assert by_key[None].value() == b'"not an object"'

    wait_until(polls_after(server, 3), 10, "three more polls")
    assert len(read_all(connector_city.settings, topic, 4, timeout_s=2)) == 3  # not dead-lettered again
    assert ids(on_topic(connector_city)) == expected(1, 4)
    assert runner.status().position == {"updated_since": iso_ms(to_ms(later(4))), "after_id": case_id(4)}
    assert runner.state == "running"


def test_a_next_link_to_another_origin_stops_the_connector(
    server: CaseServer, poller: Callable[..., ConnectorRunner],
) -> None:
    server.next_base = server.base.replace("127.0.0.1", "localhost")
    server.put(*[case(n, later(n)) for n in (1, 2, 3)])
    runner = poller(limit=2).start()
    assert runner.wait(20) == "failed"
    assert "another origin" in str(runner.error)
    assert published(runner) == 2


def test_the_token_is_sent_never_logged_and_a_wrong_one_stops_the_connector(
    server: CaseServer, poller: Callable[..., ConnectorRunner], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = f"tok-{random.getrandbits(64):x}"
    wrong = f"wrong-{random.getrandbits(64):x}"
    server.token = token
    server.put(case(1, later(1)))
    server.fail(0, 500)  # a retry's log line too
    monkeypatch.setenv("TEST_CASES_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        runner = poller(bearer_token="env:TEST_CASES_TOKEN").start()
        wait_until(lambda: published(runner) == 1, 20, "the case")
        good_status = runner.status()
        runner.stop()

        monkeypatch.setenv("TEST_CASES_TOKEN", wrong)
        refused = poller(bearer_token="env:TEST_CASES_TOKEN")
        with contextlib.suppress(ConnectorFailed):  # on a busy machine the 401 may come before start returns
            refused.start()
        assert refused.wait(20) == "failed"
    assert server.requests()[1].headers["authorization"] == f"Bearer {token}"
    message = str(refused.error)
    assert "answered 401" in message and "check bearer_token" in message
    shown = " ".join([json.dumps(logs, default=str), caplog.text, message, json.dumps(good_status.as_dict()),
                      json.dumps(refused.status().as_dict())])
    assert any(line.get("event") == "retrying" for line in logs)
    assert token not in shown and wrong not in shown
