"""The admin surfaces bound beyond loopback, reached over the machine's own network
address (not 127.0.0.1): the ops endpoints and the page refuse to start without a token,
and then answer 401 to every request without it or with a wrong one, 200 with it.

tests/web proves the rule on loopback and for 0.0.0.0 at construction time, and
tests/cli that `bus registry --host 0.0.0.0` is refused; here the same rules are
checked where they matter, on an address other machines could reach, and through the
commands a city runs (`bus web`, `bus up`, `bus registry`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from bus.ops.metrics import BusMonitor
from bus.topology.models import Topology
from bus.topology.validate import load_topology
from bus.web.ops import OpsServer
from bus.web.page import PageServer
from bus.serving import ServeError
from tests.connectors.support import wait_until
from bus.web.state import PageState

REPO = Path(__file__).resolve().parents[2]
BUS = [sys.executable, "-m", "bus"]
TOKEN = "admin-surface-token-5d1c"


def machine_address() -> tuple[str, str]:
    """(address to bind, address to connect to): the machine's first non-loopback IPv4
    address for both when it has one, else 0.0.0.0 reached through 127.0.0.1."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        address = ""
    finally:
        probe.close()
    if address and not address.startswith("127."):
        return address, address
    return "0.0.0.0", "127.0.0.1"


BIND, CONNECT = machine_address()

#: Authorization headers that must not open anything.
WRONG = {
    "none": {},
    "wrong token": {"Authorization": "Bearer wrong"},
    "token with one more character": {"Authorization": f"Bearer {TOKEN}x"},
    "token missing its last character": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token without the scheme": {"Authorization": TOKEN},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "token in another header": {"X-Bus-Token": TOKEN},
    "wrong cookie": {"Cookie": "bus_web_token=wrong"},
}
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


class FixedState:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def state(self) -> PageState:
        return PageState(city=self.topology.city.name, namespace=None, at=1.0, interval_s=5.0)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "topology.yaml")


def over_the_network(url: str) -> str:
    """The server's URL with the address a remote caller would use."""
    return re.sub(r"^http://[^/]+:", f"http://{CONNECT}:", url)


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
def test_without_a_token_neither_surface_starts_beyond_loopback(topology: Topology, token: str | None) -> None:
    with pytest.raises(ServeError, match=f"on {re.escape(BIND)} without a token: set BUS_WEB_TOKEN"):
        OpsServer(BusMonitor(), {}, host=BIND, token=token)
    with pytest.raises(ServeError, match=f"on {re.escape(BIND)} without a token: set BUS_WEB_TOKEN"):
        PageServer(topology, FixedState(topology), host=BIND, token=token)


def test_the_ops_endpoints_beyond_loopback_need_the_token(topology: Topology) -> None:
    monitor = BusMonitor()
    monitor.on_record_in("city.events.camera_alarm", 3)
    with OpsServer(monitor, {}, host=BIND, token=TOKEN) as server:
        url = over_the_network(server.url)
        for name, headers in WRONG.items():
            answer = httpx.get(f"{url}/metrics", headers=headers)
            assert answer.status_code == 401, name
            assert "bus_records_in_total" not in answer.text
        assert httpx.get(f"{url}/metrics?token={TOKEN}").status_code == 401  # not in the address
        scraped = httpx.get(f"{url}/metrics", headers=RIGHT)
        assert scraped.status_code == 200 and "bus_records_in_total" in scraped.text
        # The probes stay open (an orchestrator has no token); they tell nothing of the city.
        assert httpx.get(f"{url}/healthz").json() == {"status": "alive"}
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_the_page_beyond_loopback_needs_the_token(topology: Topology) -> None:
    with PageServer(topology, FixedState(topology), host=BIND, token=TOKEN) as server:
        url = over_the_network(server.url)
        for path in ("/", "/api/state", "/graph.svg"):
            for name, headers in WRONG.items():
                answer = httpx.get(url + path, headers=headers)
                assert answer.status_code == 401, (path, name)
                assert topology.city.name not in answer.text, (path, name)
            assert httpx.get(url + path, headers=RIGHT).status_code == 200, path
        assert httpx.get(f"{url}/?token=wrong").status_code == 401
        assert httpx.get(f"{url}/api/state?token={TOKEN}").status_code == 401  # the address opens only /
        with httpx.Client(base_url=url) as browser:
            assert browser.get(f"/?token={TOKEN}").status_code == 303
            assert browser.get("/api/state").json()["city"] == topology.city.name


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(extra)
    return env


@pytest.fixture
def web_command(kafka_settings: KafkaSettings) -> Iterator[subprocess.Popen[str]]:
    """`bus web --host <machine address>` with BUS_WEB_TOKEN set, as a city would run it."""
    child = subprocess.Popen(
        [*BUS, "web", "--host", BIND, "--port", "0"], cwd=REPO, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environ(BUS_WEB_TOKEN=TOKEN, BUS_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
                    BUS_KAFKA_PROFILE="embedded"),
    )
    yield child
    child.send_signal(signal.SIGTERM)
    child.wait(20)


@pytest.mark.integration
def test_bus_web_beyond_loopback_serves_only_with_the_token(web_command: subprocess.Popen[str]) -> None:
    assert web_command.stdout is not None
    line = wait_until(web_command.stdout.readline, 30, "`bus web` to say where it serves")
    assert "token required" in line, line
    url = over_the_network(re.search(r"page: (http://\S+?)/ ", line).group(1))  # type: ignore[union-attr]
    assert httpx.get(f"{url}/api/state").status_code == 401
    assert httpx.get(f"{url}/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/api/state", headers=RIGHT).status_code == 200


def test_bus_up_beyond_loopback_without_a_token_is_refused() -> None:
    result = subprocess.run(
        [*BUS, "up", "--web-host", BIND, "--no-processors", "--no-connectors", "--exit-after-start",
         "--broker-port", str(free_port()), "--registry-port", str(free_port()), "--web-port", "0", "--page-port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=environ(BUS_WEB_TOKEN=""),
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert f"refusing to serve the ops endpoints and the page on {BIND} without a token: set BUS_WEB_TOKEN" in result.stderr
    assert "broker:" not in result.stdout  # refused before anything started
    assert "Traceback" not in result.stderr
    assert "ops: http" not in result.stdout and "page: http" not in result.stdout


def test_bus_registry_on_the_machine_address_is_refused() -> None:
    """tests/cli covers 0.0.0.0; a specific non-loopback address is refused as well."""
    result = subprocess.run([*BUS, "registry", "--host", BIND, "--port", str(free_port())], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False, env=environ())
    assert result.returncode == 1
    assert f"refusing to serve the schema registry on {BIND}" in result.stderr
