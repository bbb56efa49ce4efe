"""A local Apache Kafka (KRaft) on loopback, started by the bus: one node, or three.

The broker's jars and Java: :mod:`bus.kafka.distribution`. Each node is a combined broker and controller (static
quorum), with its own log folder under the data folder. The data folder is formatted once
and then reused: stop the nodes (or kill them) and start them again on the same folder, and
every topic, offset and transaction is there.

Three nodes: the bus's topics get replication factor 3 and ``min.insync.replicas`` 2 (the
brokers' defaults, which the bus's topic specs leave to the broker), as do Kafka's own.

Secured (``scram_users``, opt-in): clients and brokers authenticate with SASL/SCRAM-SHA-512
on the one client listener (SASL_PLAINTEXT; inter-broker traffic as the super user), the
controllers with SASL/PLAIN as an internal user whose password is made at each start (SCRAM
cannot authenticate controllers: its credentials live in the metadata they serve). A plain
listener would have to make its anonymous principal a super user, open to any local
process. Kafka's StandardAuthorizer decides, ``allow.everyone.if.no.acl.found=false``, and
only the super user (the first of ``scram_users`` unless named) and the controllers' user are
super users. The super user's credential is made when the storage is formatted (the brokers
need it to talk to each other); the other users' after the start, through the AdminClient.
Passwords are never logged and never on a command line; each node's ``server.properties``
(mode 0600) holds the super user's and the controllers' passwords, as Kafka needs them.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from bus.kafka.admin import unserved_partitions
from bus.kafka.broker import port_open, set_parent_death_signal
from bus.kafka.config import KafkaSettings, admin_config
from bus.kafka.distribution import KAFKA_VERSION, default_home, java_binary, kafka_jars
from bus.kafka.exceptions import LocalKafkaError

log = structlog.get_logger(__name__)

#: One line per node's Java process; heap enough for tests and a small city.
JVM_OPTIONS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]

MANIFEST = "bus-kafka.json"

Say = Callable[[str], None]


def default_data_dir(nodes: int) -> Path:
    """Where `bus broker kafka` and `bus up --broker kafka` keep the city's data by default."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "citybus" / ("kafka" if nodes == 1 else f"kafka-{nodes}-nodes")


# --- Configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    folder: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _cluster_id() -> str:
    """A random Kafka cluster id (base64url of 16 bytes); as Kafka's own, never starting with
    '-' (the storage tool would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def node_properties(node: Node, voters: str, nodes: int) -> str:
    replicas = min(nodes, 3)
    min_isr = 2 if nodes >= 3 else 1
    settings = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.folder / "logs"),
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 12,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 12,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A group of one member starts at once (Kafka's default waits 3 s for more to join).
        "group.initial.rebalance.delay.ms": 0,
        "num.partitions": 1,
        "auto.create.topics.enable": "true",
        "log.retention.hours": 168,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""

#: Secured mode: the clients' (and brokers') SASL mechanism, and the controllers' own user.
SCRAM_MECHANISM = "SCRAM-SHA-512"
CONTROLLER_USER = "kafka-controller"
#: The super user's password goes into a JAAS line and the storage tool's ``--add-scram``:
#: no quotes, backslashes, commas, brackets, '=' or blanks there.
_PLAIN_SECRET = re.compile(r'^[^\s"\\,\[\]=]+$')


def secured_properties(node: Node, super_user: str, super_password: str, controller_password: str) -> str:
    """Settings that follow (and so override) :func:`node_properties`'s in secured mode."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    settings = {
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
            f'{scram} required username="{super_user}" password="{super_password}";',
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config":
            f'{plain} required username="{CONTROLLER_USER}" password="{controller_password}" '
            f'user_{CONTROLLER_USER}="{controller_password}";',
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{super_user};User:{CONTROLLER_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


# --- The cluster ------------------------------------------------------------------------------------


class LocalKafka:
    """``nodes`` Apache Kafka processes on 127.0.0.1, durable in ``data_dir``.

    Ports: the first node listens on ``port`` (a free one when None), the others on the next
    ones; controllers on ``port + 100`` and up. A data folder remembers its ports and node
    count; reusing it with other ones is refused.

    ``scram_users`` (user -> password) secures it (module docstring); ``super_user`` names the
    super user among them (default: the first). Its password is fixed when the data folder is
    formatted; the other users are created, or their passwords set, at every start."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        nodes: int = 1,
        port: int | None = None,
        home: Path | None = None,
        die_with_parent: bool = True,
        say: Say | None = None,
        scram_users: Mapping[str, str] | None = None,
        super_user: str | None = None,
    ) -> None:
        if nodes not in (1, 3):
            raise LocalKafkaError(f"--nodes must be 1 or 3, not {nodes}")
        self.scram_users = dict(scram_users or {})
        self.super_user = super_user or next(iter(self.scram_users), None)
        if self.scram_users and self.super_user not in self.scram_users:
            raise LocalKafkaError(f"the super user {self.super_user!r} is not one of the SCRAM users")
        if self.super_user and not _PLAIN_SECRET.match(self.scram_users[self.super_user]):
            raise LocalKafkaError(
                f"the super user {self.super_user!r}'s password may not hold blanks, quotes, backslashes, commas, "
                "brackets or '=' (Kafka's configuration and storage tool take it as it is)"
            )
        self._controller_password = secrets.token_urlsafe(24)
        self.nodes_count = nodes
        self._temporary = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="bus-kafka-"))
        self.home = home or default_home()
        self.die_with_parent = die_with_parent
        self.say = say or (lambda line: None)
        self._requested_port = port
        self.nodes: list[Node] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}
        self.cluster_id = ""

    # -- addresses
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def pid(self, node_id: int) -> int | None:
        proc = self._procs.get(node_id)
        return proc.pid if proc and proc.poll() is None else None

    @property
    def pids(self) -> list[int]:
        return [pid for node in self.nodes if (pid := self.pid(node.node_id))]

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def log_path(self, node_id: int) -> Path:
        return self.node(node_id).folder / "kafka.log"

    # -- secured mode
    @property
    def secured(self) -> bool:
        return bool(self.scram_users)

    def client_settings(self, user: str | None = None, password: str | None = None) -> KafkaSettings:
        """Client settings for this cluster (``cluster`` profile); secured, as ``user`` (default:
        the super user) with its password (or ``password``, e.g. a wrong one)."""
        settings = KafkaSettings().with_broker(self.bootstrap_servers, embedded=False)
        if not self.secured:
            return settings
        user = user or self.super_user
        assert user is not None
        secret = password if password is not None else self.scram_users.get(user, "")
        return settings.model_copy(update={
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_username": user, "sasl_password": SecretStr(secret),
        })

    def add_scram_user(self, user: str, password: str, timeout_s: float = 30.0) -> None:
        """Create ``user`` (or set its password), acting as the super user; returns once the
        broker answers for it."""
        self.scram_users[user] = password
        self._upsert_scram({user: password}, timeout_s)

    def _upsert_scram(self, users: Mapping[str, str], timeout_s: float) -> None:
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        if not users:
            return
        client = AdminClient(admin_config(self.client_settings(), client_id="bus-kafka-users"))
        mechanism = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        futures = client.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, mechanism, password.encode()) for user, password in users.items()],
            request_timeout=timeout_s,
        )
        for user, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                raise LocalKafkaError(f"could not set the SCRAM credential of {user!r}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while True:  # the controller has it; the brokers take it from the metadata log
            try:
                known = client.describe_user_scram_credentials(list(users), request_timeout=5)
                if all(future.result() for future in known.values()):
                    return
            except Exception:  # not yet there: "resource not found"
                pass
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"the brokers did not know the SCRAM users {sorted(users)} within {timeout_s:g} s"
                )
            time.sleep(0.1)

    def _properties(self, node: Node, voters: str) -> str:
        text = node_properties(node, voters, self.nodes_count)
        if self.secured:
            assert self.super_user is not None
            text += secured_properties(node, self.super_user, self.scram_users[self.super_user],
                                       self._controller_password)
        return text

    @contextmanager
    def _hidden_arguments(self, node: Node, command: list[str]) -> Iterator[list[str]]:
        """``command`` with its main class and arguments in a java @argfile (mode 0600, removed
        after): a password among them stays off the process list."""
        main = command.index("-cp") + 2
        argfile = node.folder / "arguments.private"
        _write_private(argfile, "".join(f'"{_java_quoted(arg)}"\n' for arg in command[main:]))
        try:
            yield [*command[:main], f"@{argfile}"]
        finally:
            argfile.unlink(missing_ok=True)

    def _probe_config(self, servers: str) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": servers, "logger": _QUIET}
        if self.secured:  # as the super user
            conf = {**admin_config(self.client_settings(), client_id="bus-kafka-probe"), **conf}
        return conf

    # -- layout
    def _plan(self) -> None:
        manifest_path = self.data_dir / MANIFEST
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest["nodes"] != self.nodes_count:
                raise LocalKafkaError(
                    f"{self.data_dir} holds a {manifest['nodes']}-node Kafka, not {self.nodes_count}: "
                    f"start it with --nodes {manifest['nodes']}, or give another --data folder"
                )
            if self._requested_port not in (None, manifest["port"]):
                raise LocalKafkaError(
                    f"{self.data_dir} holds a Kafka that listens on port {manifest['port']} (its clients and "
                    f"its own metadata know that address): start it with --port {manifest['port']}, or give "
                    "another --data folder"
                )
            port, controller_port, self.cluster_id = manifest["port"], manifest["controller_port"], manifest["cluster_id"]
        else:
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise LocalKafkaError(
                    f"{self.data_dir} is not empty and holds no Kafka of the bus ({MANIFEST} is missing): "
                    "give an empty or new --data folder"
                )
            port = self._requested_port or _free_run(2 * self.nodes_count)
            controller_port = port + 100 if self._requested_port else port + self.nodes_count
            self.cluster_id = _cluster_id()
        self.nodes = [
            Node(i + 1, port + i, controller_port + i, self.data_dir / f"node-{i + 1}") for i in range(self.nodes_count)
        ]
        if not manifest_path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            manifest_path.write_text(json.dumps({
                "kafka_version": KAFKA_VERSION, "nodes": self.nodes_count, "port": port,
                "controller_port": controller_port, "cluster_id": self.cluster_id,
            }, indent=2) + "\n")

    def _write_configs(self) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            if self.secured:  # it holds passwords
                _write_private(node.folder / "server.properties", self._properties(node, voters))
            else:
                (node.folder / "server.properties").write_text(node_properties(node, voters, self.nodes_count))
            (node.folder / "log4j2.properties").write_text(LOG4J2)

    def _java(self, node: Node, main: str, *args: str) -> list[str]:
        return [
            java_binary(), *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={node.folder / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.folder}",
            "-cp", str(self._libs / "*"), main, *args,
        ]

    def _format(self, node: Node) -> None:
        if (node.folder / "logs" / "meta.properties").exists():
            return
        command = self._java(node, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                             "-c", str(node.folder / "server.properties"), "--ignore-formatted")
        secret = ""
        if self.secured:
            assert self.super_user is not None
            secret = self.scram_users[self.super_user]
            command += ["--add-scram", f"{SCRAM_MECHANISM}=[name={self.super_user},password={secret}]"]
        with self._hidden_arguments(node, command) if secret else _as_is(command) as command:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            said = (result.stdout + result.stderr).replace(secret, "***") if secret else result.stdout + result.stderr
            raise LocalKafkaError(
                f"could not format Kafka's storage in {node.folder / 'logs'}: {said[-1500:]}"
            )

    # -- life cycle
    def start(self, timeout_s: float = 90.0) -> "LocalKafka":
        """Start every node and wait until the cluster serves. A temporary cluster on ports of its
        own choosing that loses one of them to another process between the choice and the bind
        starts again on other ports (twice at most)."""
        for attempt in range(3):
            try:
                return self._start(timeout_s)
            except LocalKafkaError as exc:
                if not (self._temporary and self._requested_port is None and attempt < 2
                        and "Address already in use" in str(exc)):
                    raise
                log.warning("local kafka: a chosen port was taken meanwhile; starting again on others")
                for node_id in list(self._procs):
                    self.stop_node(node_id)
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir.mkdir(parents=True)
        raise AssertionError("unreachable")

    def _start(self, timeout_s: float) -> "LocalKafka":
        if self._procs:
            return self
        self._libs = kafka_jars(self.home, self.say)
        self._plan()
        busy = [p for n in self.nodes for p in (n.port, n.controller_port) if port_open("127.0.0.1", p)]
        if busy:
            raise LocalKafkaError(
                f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use: stop what listens there "
                "(another `bus broker`?) or choose another --port"
            )
        self._write_configs()
        with concurrent.futures.ThreadPoolExecutor(self.nodes_count) as pool:
            list(pool.map(self._format, self.nodes))
        for node in self.nodes:
            self.start_node(node.node_id)
        self.wait_ready(timeout_s)
        if self.secured:
            self._upsert_scram({u: p for u, p in self.scram_users.items() if u != self.super_user}, timeout_s)
        log.info("local kafka started", bootstrap_servers=self.bootstrap_servers, nodes=self.nodes_count,
                 data_dir=str(self.data_dir))
        return self

    def start_node(self, node_id: int) -> None:
        """Start one node (again); returns at once (``wait_ready`` waits for the cluster)."""
        node = self.node(node_id)
        if self.pid(node_id):
            return
        if node_id in self._logs:
            self._logs.pop(node_id).close()
        self._logs[node_id] = open(node.folder / "kafka.log", "ab")
        self._procs[node_id] = subprocess.Popen(
            self._java(node, "kafka.Kafka", str(node.folder / "server.properties")),
            stdout=self._logs[node_id],
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=set_parent_death_signal if self.die_with_parent else None,
            # Its own session: Ctrl-C must not reach it before the parts that still write to it stop.
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until every running node is a registered broker that answers metadata, and every
        partition has a leader."""

        deadline = time.monotonic() + timeout_s
        expected = {n.node_id for n in self.nodes if self.pid(n.node_id)}
        while True:
            for node in self.nodes:
                proc = self._procs.get(node.node_id)
                if proc is not None and proc.poll() is not None and node.node_id in expected:
                    tail = _tail(self.log_path(node.node_id))
                    raise LocalKafkaError(
                        f"Kafka node {node.node_id} exited with code {proc.returncode} while starting "
                        f"(log {self.log_path(node.node_id)}):\n{tail}"
                    )
            seen: set[int] = set()
            leaderless: list[str] = []
            live = [n.address for n in self.nodes if n.node_id in expected and port_open("127.0.0.1", n.port)]
            if live:
                try:
                    client = AdminClient(self._probe_config(",".join(live)))
                    metadata = client.list_topics(timeout=2)
                    seen = set(metadata.brokers)
                    # After an unclean stop a node answers before it leads its partitions again.
                    leaderless = unserved_partitions(client, metadata.topics.values()) if expected <= seen else []
                except Exception:  # not answering yet
                    seen, leaderless = set(), []
            if expected <= seen and not leaderless:
                return
            if time.monotonic() > deadline:
                missing = sorted(expected - seen)
                if not missing:
                    raise LocalKafkaError(
                        f"Kafka's partitions {', '.join(leaderless[:5])} have no leader {timeout_s:g} s after "
                        f"the start; see {self.log_path(self.nodes[0].node_id)}"
                    )
                raise LocalKafkaError(
                    f"Kafka node(s) {missing} did not become ready within {timeout_s:g} s; see "
                    + ", ".join(str(self.log_path(i)) for i in missing)
                )
            time.sleep(0.2)

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        proc = self._procs.get(node_id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            if sig == signal.SIGKILL:
                proc.wait(10)

    def stop_node(self, node_id: int, timeout_s: float = 30.0) -> None:
        proc = self._procs.get(node_id)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen node cannot shut down
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._procs.pop(node_id, None)
        if node_id in self._logs:
            self._logs.pop(node_id).close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node (controlled shutdown, then kill after ``timeout_s``); a temporary
        data folder is removed."""
        with concurrent.futures.ThreadPoolExecutor(max(1, len(self._procs))) as pool:
            list(pool.map(lambda node_id: self.stop_node(node_id, timeout_s), list(self._procs)))
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        log.info("local kafka stopped", data_dir=str(self.data_dir))

    def wait(self) -> int:
        """Block until a node exits (foreground `bus broker kafka`); its exit code."""
        while True:
            for proc in self._procs.values():
                code = proc.poll()
                if code is not None:
                    return code
            time.sleep(0.5)

    def __enter__(self) -> "LocalKafka":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The readiness probe's librdkafka logger: refused connections while a node starts are expected.
_QUIET = logging.getLogger("bus.kafka.local.probe")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1, below the kernel's range of
    ephemeral ports: a port from that range (what the OS hands a bind to port 0) may be taken
    by any outgoing connection between the choice and Kafka's bind ("Address already in use")."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(max(1024, low - 12_000), low - count)
        if all(_bindable(first + i) for i in range(count)):
            return first
    raise LocalKafkaError(f"found no {count} consecutive free ports on 127.0.0.1")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (from the first byte on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _java_quoted(arg: str) -> str:
    """An argument inside double quotes of a java @argfile (backslash escapes there)."""
    return arg.replace("\\", "\\\\").replace('"', '\\"')


@contextmanager
def _as_is(command: list[str]) -> Iterator[list[str]]:
    yield command


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""
