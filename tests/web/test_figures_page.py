"""The figures the city runs on, on the page: known records on the real broker (tests.ops.figures_data),
polled by the page's provider, answered in /api/state and rendered by a real headless Chromium.

The Chromium test saves a screenshot to ``tests/artifacts/page-figures.png``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.kafka.compacted import CompactedTopic
from bus.connect.status import now_iso
from bus.kafka.admin import delete_topics
from bus.ops.metrics import BusMonitor
from bus.topology.models import topic_name
from bus.topology.names import AVAILABILITY_TOPIC
from bus.web.cluster import ClusterProvider
from bus.web.page import PageServer
from tests.fixtures.city import City
from tests.ops import figures_data as data
from tests.ops.helpers import wait_until
from tests.web.test_page import ARTIFACTS, CHROMIUM, _Dom, chromium
from bus.web.state import PageState


@pytest.fixture
def figures_page(city: City) -> Iterator[tuple[PageServer, ClusterProvider, BusMonitor]]:
    """The data set, camera availability for two districts, and the page on them, its clock at
    the data set's "now"."""
    topo, settings = city.topology, city.settings
    assert data.write_known_records(topo, settings) == data.RECORDS
    cameras = topic_name(topo.namespace, AVAILABILITY_TOPIC)
    n = data.Names.of(topo)
    availability = CompactedTopic(settings, cameras).ensure()
    availability.put("all", {"online": 226, "total": 300, "ratio": 0.753333, "at": now_iso()})
    availability.put(n.d1, {"online": 96, "total": 100, "ratio": 0.96, "at": now_iso()})
    availability.put(n.d2, {"online": 130, "total": 200, "ratio": 0.65, "at": now_iso()})
    availability.close()
    monitor = BusMonitor()
    provider = ClusterProvider(topo, settings, interval_s=1.0, monitor=monitor, clock=lambda: data.NOW)
    try:
        with provider:
            wait_until(lambda: _read_all(provider), 90, "the page's provider read the data set")
            with PageServer(topo, provider, refresh_s=1.0) as server:
                yield server, provider, monitor
    finally:
        delete_topics(settings, [cameras, data.sla_topic(topo)])


def _read_all(provider: ClusterProvider) -> bool:
    figures = provider.state().figures
    return figures is not None and figures.caught_up and figures.records_read >= data.RECORDS


@pytest.mark.integration
def test_the_state_answers_the_exact_figures(
    figures_page: tuple[PageServer, ClusterProvider, BusMonitor], city: City
) -> None:
    server, _, monitor = figures_page
    state = PageState.model_validate(httpx.get(f"{server.url}/api/state").json())
    assert state.figures is not None and state.figures.records_read == data.RECORDS
    data.assert_known_figures(state.figures, city.topology)
    # The provider handed the same figures to /metrics.
    text = monitor.render().decode()
    assert 'bus_camera_faults_overdue{deadline="answer",district="all"} 1.0' in text
    assert 'bus_sharing_share{of="records"} 0.5454' in text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                    "(apt-get install chromium): the page cannot be rendered in a real browser")
@pytest.mark.integration
def test_chromium_renders_sharing_maintenance_throughput_and_latency(
    figures_page: tuple[PageServer, ClusterProvider, BusMonitor], city: City, tmp_path: Path
) -> None:
    server, _, _ = figures_page
    topo = city.topology
    n = data.Names.of(topo)
    first, second = n.population_subs
    html = chromium(f"{server.url}/", tmp_path, "--dump-dom").stdout
    dom = _Dom()
    dom.feed(html)
    events = len(topo.event_types)

    # Sharing
    assert re.search(rf'id="sharing-types">Event types shared: 2 of {events} \({round(200 / events, 1):g}%\)<', html)
    assert re.search(r'id="sharing-records">records shared: 6 of 11 \(54.5%\)<', html)
    assert dom.rows[f"data-sharing-department={n.civil}"][1:5] == ["6", "5", "0", ""]
    assert dom.rows[f"data-sharing-department={first.department}"][1:5] == ["0", "0", "3", f"{n.civil} 3"]
    assert dom.rows[f"data-sharing-department={n.case_sub.department}"][3:5] == ["1", f"{n.cases} 1"]
    reached = ", ".join(sorted({first.department, second.department}))
    assert dom.rows["data-sharing-type=population_change"] == [
        "population_change", n.civil, "6", "5", "83.3%", reached]
    assert dom.rows["data-sharing-type=camera_status"][2:6] == ["3", "0", "0%", ""]

    # The maintenance promise: working order against 95%, faults, breaches
    assert dom.rows[f"data-district={n.d1}"][1:5] == ["96", "100", "96%", "kept"]
    assert dom.rows[f"data-district={n.d2}"][1:5] == ["130", "200", "65%", "broken"]
    assert dom.rows["data-district=all"][4] == "broken"
    assert dom.rows["data-fault-district=all"] == ["all districts", "2", "5", "2", "2", "2", "1", "1 / 0"]
    assert dom.rows[f"data-fault-district={n.d1}"] == [n.d1, "1", "2", "1", "1", "1", "0", "1 / 0"]
    assert dom.rows[f"data-fault-district={n.d2}"] == [n.d2, "1", "2", "1", "0", "0", "1", "0 / 0"]
    breaches = [key for key in dom.rows if key.startswith("data-breach=")]
    assert [key.split("=", 1)[1].split("|")[:2] for key in breaches] == [
        ["CAM-B", "answer"], ["CAM-E", "answer"], ["CAM-C", "repair"]]
    b = dom.rows[breaches[0]]
    assert b[:4] == ["CAM-B", n.d1, n.police, "answer within 24 h"]
    assert b[4:7] == ["2023-11-14 22:13:20Z", "2023-11-15 22:13:20Z", "not yet"]  # data.T, T + 24 h
    assert b[7] == data.expected(topo)["breaches"][0][6]
    assert dom.rows[breaches[1]][1] == "-" and dom.rows[breaches[1]][6] == "late, 2023-11-16 03:13:20Z"

    # Throughput and latency, last hour
    assert dom.rows["data-throughput=population_change"][:5] == ["population_change", n.civil, "5", "0.03", "6"]
    assert dom.rows["data-throughput=camera_status"][2:5] == ["3", "0.00", "3"]
    assert dom.rows[f"data-latency={first.name}"] == [first.department, first.name, "3", "0.120", "3.000", "3.000"]
    assert dom.rows[f"data-latency={second.name}"][2:6] == ["2", "0.050", "7.000", "7.000"]
    idle = next(s for s in topo.subscriptions if s.event_type == "camera_alarm")
    assert dom.rows[f"data-latency={idle.name}"][2:6] == ["0", "-", "-", "-"]

    shot = ARTIFACTS / "page-figures.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    chromium(f"{server.url}/", tmp_path, f"--screenshot={shot}", "--window-size=1400,3400", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
