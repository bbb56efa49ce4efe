"""The routers of a topology, kept in step with the applied topology.

Subscriptions with ``start: now`` share one router (group ``bus-router``). A subscription
with a start point (``earliest`` or a time) gets a router *lane* of its own (group
``bus-router.<subscription>``): it starts at that point and keeps going, so a department
connected today receives the history it is entitled to, in order and exactly once,
without holding back anyone else. A lane keeps running after it caught up (merging it into
the shared group would need a stop-the-world hand-over; one more consumer is cheaper).

While running, the service watches the published topology (``bus apply``,
:mod:`bus.topology.published`) and changes between two transactions of each router: a
new ``now`` subscription starts at the time it was added, a new lane starts at its start
point, a removed subscription stops receiving, and every other subscription goes on
without a gap or a repeat. A subscription's ``start`` applies when it is created: a
changed ``start`` of an existing subscription is refused (add a new subscription to
backfill), because moving it between lanes would deliver its history twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import fields

import structlog

from bus.errors import BusError
from bus.kafka.config import KafkaSettings
from bus.retry import Restarts
from bus.routing.router import DEFAULT_BATCH_SIZE, Router, RouterMonitor, RouterStats
from bus.topology.models import Subscription, Topology
from bus.topology.published import TopologyWatcher

log = structlog.get_logger(__name__)

WATCH_INTERVAL_S = 1.0
#: A failed router runs again after BACKOFF_MIN_S, doubling to BACKOFF_MAX_S while it keeps
#: failing; after STABLE_AFTER_S of running the wait starts over.
BACKOFF_MIN_S, BACKOFF_MAX_S, STABLE_AFTER_S = 0.5, 15.0, 60.0


def _shared(sub: Subscription) -> bool:
    return sub.lane is None


class RoutingService:
    """One shared router and one lane per subscription with a start point, each on a thread."""

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        instance: str = "0",
        batch_size: int = DEFAULT_BATCH_SIZE,
        monitor: RouterMonitor | None = None,
        environ: dict[str, str] | None = None,
        watch: bool = True,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.instance = instance
        self.batch_size = batch_size
        self.monitor = monitor
        self.environ = environ
        self.watch = watch
        self.routers: dict[str | None, Router] = {None: self._router(topology, None)}
        for sub in topology.subscriptions:
            if sub.lane:
                self.routers[sub.lane] = self._router(topology, sub.lane)
        self._threads: dict[str | None, tuple[threading.Thread, threading.Event]] = {}
        self._stop = threading.Event()
        self._watcher_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.applied: list[str] = []  # digests of the published topologies served, in order
        self.refused: list[str] = []  # why a published topology was not served
        self.restarts: dict[str | None, int] = {}  # lane (None: the shared router) -> runs after a failure

    def _router(self, topology: Topology, lane: str | None) -> Router:
        select: Callable[[Subscription], bool] = _shared if lane is None else (lambda s: s.name == lane)
        return Router(topology, self.settings, instance=self.instance, batch_size=self.batch_size,
                      environ=self.environ, monitor=self.monitor, select=select, lane=lane)

    # -- running --------------------------------------------------------------------------

    def prepare(self) -> None:
        for router in self.routers.values():
            router.prepare()

    def start(self) -> RoutingService:
        for lane, router in self.routers.items():
            self._start(lane, router)
        if self.watch:
            self._watcher_thread = threading.Thread(target=self._watch, name="bus-topology-watch", daemon=True)
            self._watcher_thread.start()
        return self

    def _start(self, lane: str | None, router: Router) -> None:
        stop = threading.Event()
        name = "bus-router" if lane is None else f"bus-router.{lane}"
        thread = threading.Thread(target=self._keep_running, args=(router, stop), name=name, daemon=True)
        thread.start()
        self._threads[lane] = (thread, stop)

    def _keep_running(self, router: Router, stop: threading.Event) -> None:
        """Run a router until stopped; when it fails (a fatal transaction error after the broker
        was away too long, a fenced producer, a recovery that timed out), run it again after a
        back-off. Each run starts from the committed transactional offsets, so a restart
        neither loses nor repeats a record, and the other routers never notice."""
        restarts = Restarts(BACKOFF_MIN_S, BACKOFF_MAX_S, STABLE_AFTER_S)
        while not stop.is_set():
            started = time.monotonic()
            try:
                router.run(stop)
                return
            except Exception as exc:  # noqa: BLE001 (any failure: the router must come back)
                delay = restarts.after_failure(time.monotonic() - started)
                self.restarts[router.lane] = restarts.count
                log.error("router failed; starting it again", group=router.group, error=str(exc),
                          error_type=type(exc).__name__, in_s=delay, restarts=restarts.count)
            if stop.wait(delay):
                return

    def wait_assigned(self, timeout_s: float) -> bool:
        """True once every router was given its partitions."""
        return all(router.assigned.wait(timeout_s) for router in list(self.routers.values()))

    def is_assigned(self) -> bool:
        return all(router.assigned.is_set() for router in list(self.routers.values()))

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        for thread, stop in self._threads.values():
            stop.set()
        for thread, _ in self._threads.values():
            thread.join(timeout_s)
        if self._watcher_thread is not None:
            self._watcher_thread.join(timeout_s)

    def __enter__(self) -> RoutingService:
        self.prepare()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> RouterStats:
        """The routers' figures added up."""
        total = RouterStats()
        for router in list(self.routers.values()):
            for f in fields(RouterStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(router.stats, f.name))
        return total

    @property
    def subscriptions(self) -> list[str]:
        return [name for router in list(self.routers.values()) for name in router.subscriptions]

    # -- topology changes -------------------------------------------------------------------

    def apply(self, topology: Topology) -> None:
        """Serve ``topology`` from now on; raises BusError (and changes nothing) for a change
        that cannot be made while running."""
        with self._lock:
            self._refuse_moves(topology)
            lanes = {sub.lane for sub in topology.subscriptions if sub.lane}
            for lane in [lane for lane in self.routers if lane is not None and lane not in lanes]:
                self._drop_lane(lane)
            self.routers[None].update(topology)
            for lane in sorted(lanes):
                if lane in self.routers:
                    self.routers[lane].update(topology)
                else:
                    router = self._router(topology, lane)
                    router.prepare()
                    self.routers[lane] = router
                    if not self._stop.is_set() and self._threads:
                        self._start(lane, router)
                    log.info("router lane added: backfilling from its start point", subscription=lane,
                             start=topology.subscription(lane).start)
            self.topology = topology

    def _refuse_moves(self, topology: Topology) -> None:
        before = {s.name: s for s in self.topology.subscriptions}
        moved = [s.name for s in topology.subscriptions if s.name in before and before[s.name].lane != s.lane]
        if moved:
            raise BusError(
                f"subscription(s) {', '.join(moved)}: `start` changed; it applies only when a subscription is "
                "created (changing it would deliver the history again). Put `start` back, or add a new "
                "subscription with the start point to backfill"
            )

    def _drop_lane(self, lane: str) -> None:
        router = self.routers.pop(lane)
        thread, stop = self._threads.pop(lane, (None, None))
        if stop is not None and thread is not None:
            stop.set()
            thread.join(30)
        elif router is not None:
            router.close()
        log.info("router lane removed", subscription=lane)

    def _watch(self) -> None:
        watcher = TopologyWatcher(self.settings, self.topology.namespace)
        try:
            while not self._stop.is_set():
                try:
                    topology = watcher.poll(WATCH_INTERVAL_S)
                    if topology is not None:
                        self.apply(topology)
                        self.applied.append(watcher.digest or "")
                        log.info("published topology applied", digest=watcher.digest,
                                 subscriptions=len(topology.subscriptions))
                except BusError as exc:
                    self.refused.append(str(exc))
                    log.error("published topology not applied; the routers keep the previous one", error=str(exc))
        finally:
            watcher.close()
