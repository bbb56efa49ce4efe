"""Running one connector: start, stop, pause, resume, status.

The connector is built by :func:`bus.connect.assembly.assemble`. A source runs its
``run()`` loop on the runner's thread and publishes through :class:`~bus.publish.Publisher`;
its position is read from the offsets topic at start. A sink is fed by
:class:`bus.connect.sink_loop.SinkLoop` on the runner's thread.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from importlib.metadata import EntryPoint

from bus.connect.assembly import Assembly, assemble
from bus.connect.base import Sink, Source
from bus.connect.exceptions import ConnectorFailed, Interrupted
from bus.connect.monitor import MetricsHooks
from bus.connect.sink_loop import SinkLoop
from bus.connect.status import ConnectorStatus, State, now_iso
from bus.kafka.config import KafkaSettings
from bus.topology.models import Connector, Topology
from bus.topology.names import connector_group, dlq_topic


def group_id(namespace: str | None, connector: str) -> str:
    """The consumer group of a sink: ``<namespace.>bus-connector-<name>`` (named by bus.ops.lag)."""
    return connector_group(namespace, connector)


class ConnectorRunner:
    """Runs one connector of a topology on a background thread.

    ``kind`` (the connector class) defaults to the installed type named by
    ``connector.type``; ``topic`` overrides a sink's subscription topic; ``metrics``
    receives the connector's metric hooks (e.g. the ops monitor).
    """

    def __init__(
        self,
        connector: Connector,
        topology: Topology,
        settings: KafkaSettings,
        *,
        kind: type[Source] | type[Sink] | None = None,
        topic: str | None = None,
        entry_points: Iterable[EntryPoint] | None = None,
        task_id: int = 0,
        status_interval_s: float = 10.0,
        report_status: bool = True,
        parallel_partitions: int = 8,
        metrics: MetricsHooks | None = None,
    ) -> None:
        self.connector = connector
        self.topology = topology
        self.settings = settings
        self.task_id = task_id
        self.status_interval_s = status_interval_s
        self.report_status = report_status
        self._kind = kind
        self._topic = topic
        self._entry_points = entry_points
        self._parallel = max(1, parallel_partitions)
        self._metrics = metrics
        self.instance: Source | Sink | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._state: State = "stopped"
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._parts: Assembly | None = None
        self._loop: SinkLoop | None = None
        self._pause_wanted = False

    # -- names ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.connector.name

    @property
    def group_id(self) -> str:
        return group_id(self.topology.namespace, self.name)

    @property
    def topic(self) -> str | None:
        """The topic a sink consumes (None for a source)."""
        if self.connector.side != "sink":
            return None
        if self._topic:
            return self._topic
        assert self.connector.subscription is not None
        return self.topology.subscription(self.connector.subscription).topic

    @property
    def dead_letter_topic(self) -> str:
        configured = self._parts.config.errors_deadletterqueue_topic_name if self._parts else None
        return dlq_topic(self.topology.namespace, self.name, configured)

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> BaseException | None:
        return self._error

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> "ConnectorRunner":
        """Build the connector and start it; returns once it serves (or raises its error)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._error = None
        self._set_state("starting")
        try:
            self._build()
        except BaseException as exc:
            self._fail(exc)
            self._close_resources()
            raise
        assert self.instance is not None
        self._thread = threading.Thread(target=self._main, name=f"bus-connector-{self.name}", daemon=True)
        self._thread.start()
        try:
            self._wait_ready(self.instance, self._thread, timeout_s)
            self._set_state("running")
            self._heartbeat = threading.Thread(target=self._beat, name=f"bus-connector-{self.name}-status",
                                               daemon=True)
            self._heartbeat.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, instance: Source | Sink, thread: threading.Thread, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not instance.wait_ready(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        if self._error is not None:
            raise self._error
        if instance.wait_ready(0):
            return
        if not thread.is_alive():
            raise ConnectorFailed(self.name, "its run() returned without calling mark_ready(); a source calls it "
                                  "once it serves, before producing")
        raise ConnectorFailed(self.name, f"it did not become ready within {timeout_s:g} s")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop and wait for the connector's thread. Safe to call twice."""
        if self._thread is None:
            return
        if self._state != "failed":
            self._set_state("stopping")
        self._stopping.set()
        if self.instance is not None:
            self.instance.stop()
        self._thread.join(timeout_s)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout_s)
        self._thread = self._heartbeat = None
        if self._state != "failed":
            self._set_state("stopped")
        self._close_resources()

    def pause(self) -> None:
        """Stop taking records (a sink pauses its partitions; a source its input)."""
        if self.instance is None or self._state not in ("running", "paused"):
            return
        self.instance.pause()
        self._pause_wanted = True
        if self._loop is not None:
            self._loop.pause_wanted = True
        self._set_state("paused")

    def resume(self) -> None:
        if self.instance is None or self._state != "paused":
            return
        self.instance.resume()
        self._pause_wanted = False
        if self._loop is not None:
            self._loop.pause_wanted = False
        self._set_state("running")

    def wait(self, timeout_s: float | None = None) -> State:
        """Block until the connector's thread ends (a failure, or a source that finished)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self._state

    def status(self) -> ConnectorStatus:
        counts = self._parts.monitor.snapshot() if self._parts else {}
        detail = self.instance.status_detail() if self.instance is not None else {}
        if self.connector.side == "sink":
            committed = self._loop.committed if self._loop is not None else {}
            position = {f"{t}[{p}]": o for (t, p), o in sorted(committed.items())}
            detail = {"topic": self.topic, "group": self.group_id, "dead_letter_topic": self.dead_letter_topic, **detail}
        else:
            position = dict(self.instance.position or {}) if isinstance(self.instance, Source) else {}
            detail = {"dead_letter_topic": self.dead_letter_topic, **detail}
        return ConnectorStatus(
            name=self.name,
            type=self.connector.type,
            department=self.connector.department,
            side=self.connector.side,
            state=self._state,
            worker=self.worker,
            updated_at=now_iso(),
            interval_s=self.status_interval_s,
            error=str(self._error) if self._error else None,
            counts=counts,
            position=position,
            detail=detail,
        )

    def __enter__(self) -> "ConnectorRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building ------------------------------------------------------------------------

    def _build(self) -> None:
        parts = self._parts = assemble(
            self.connector, self.topology, self.settings, kind=self._kind, entry_points=self._entry_points,
            task_id=self.task_id, metrics=self._metrics, report_status=self.report_status, stopping=self._stopping,
        )
        if issubclass(parts.kind, Source):
            self.instance = parts.source()
            self._loop = None
        else:
            assert self.topic is not None
            sink = self.instance = parts.sink(self.topic)
            self._loop = SinkLoop(self.name, sink, self.topic, self.group_id, self.settings, parts.monitor,
                                  parts.config, self._stopping, self._parallel)
            self._loop.pause_wanted = self._pause_wanted

    def _close_resources(self) -> None:
        """Close what the connector holds; its monitor stays readable (``status()``)."""
        if self._parts is not None:
            self._parts.close()

    # -- state and status ----------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        with self._lock:
            if self._state == "failed" and state not in ("starting",):
                return
            self._state = state
        if self._parts is not None:
            self._parts.monitor.on_state(state)
        self._report()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
            self._state = "failed"
        if self._parts is not None:
            self._parts.monitor.on_error(error, stage="task_put" if self.connector.side == "sink" else "task_poll")
        self._report()

    def _report(self) -> None:
        parts = self._parts
        if parts is None or parts.status is None or parts.closed:
            return
        try:
            parts.status.write(self.status())
        except Exception as exc:  # status is best effort: never stops the connector
            parts.monitor.log.warning("could not write the connector status", error=str(exc))

    def _beat(self) -> None:
        while not self._stopping.wait(self.status_interval_s):
            self._report()

    # -- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            if isinstance(self.instance, Source):
                self._run_source(self.instance)
            else:
                assert isinstance(self.instance, Sink) and self._loop is not None
                self._loop.run()
        except Interrupted:
            pass
        except BaseException as exc:
            self._fail(exc)
        else:
            if not self._stopping.is_set():
                self._set_state("stopped")  # a source whose input ended

    def _run_source(self, source: Source) -> None:
        source.setup()
        try:
            source.run()
        finally:
            try:
                source.flush()
            finally:
                source.close()
