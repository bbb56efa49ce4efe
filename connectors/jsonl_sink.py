"""JSON-lines file sink: an archive of a subscription, for audit and for systems that take
files.

Each record is one line (UTF-8 JSON) with the record's JSON form under ``value`` (null for
a tombstone) beside where it came from and what it is::

    {"topic": "city.sub.audit.all-alarms", "partition": 0, "offset": 41, "key": "CAM-CC-00123",
     "id": "<ce_id>", "type": "camera_alarm", "source": "police", "time": "2026-11-23T08:30:00.120Z",
     "subject": "CAM-CC-00123", "traceparent": "00-...", "value": {...}}

The value is kept apart rather than merged with the headers, so a field of the record can
never be mistaken for (or overwrite) an attribute of the envelope.

- **Files.** ``<path>/<prefix>-<sequence>-<UTC time of creation>.jsonl`` (``prefix``
  defaults to the connector's name); a new file is started once the current one would grow
  past ``max_bytes``. Sequence numbers sort the files in writing order.
- **Durable before committed.** :meth:`flush` (called by the runner before it commits the
  offsets) flushes and fsyncs the current file (and its folder, after a new file was
  created): what the group committed is on disk.
- **No duplicates after a replay or a crash.** At start every archive file is read and the
  highest offset written per topic partition is remembered; records at or below it are
  skipped. A last line cut short by a crash is removed first (its record was never
  committed, so it is delivered again).
- One connector per folder and prefix: the archive is only ever written by its sink.
- A write that fails (disk full, folder gone) is undone (the file truncated back) and the
  partition is paused (backpressure) to be delivered again after ``retry_after_s``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, ClassVar, TextIO

from pydantic import Field

from bus.connect.base import Sink, SinkContext
from bus.connect.config import ConnectorConfig
from bus.connect.exceptions import Backpressure, ConnectorError
from bus.connect.records import SinkBatch, SinkRecord

TP = tuple[str, int]
_SUFFIX = ".jsonl"


class JsonlSinkConfig(ConnectorConfig):
    """Settings of a `jsonl_file_sink`."""

    path: str = Field(
        min_length=1, description="Folder of the archive files (created if missing).",
        examples=["/srv/archive/all-alarms"],
    )
    prefix: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Start of the file names. Default: the connector's name.", examples=["alarms-archive"],
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="A new file is started when the current one would grow past this "
        "size (a single larger record still gets a file of its own).", examples=[67108864],
    )
    fsync: bool = Field(
        True, description="fsync the file on every flush (before the offsets are committed). Turn off only for an "
        "archive that may lose its last seconds in a power cut.", examples=[True],
    )
    retry_after_s: float = Field(
        5.0, gt=0, le=3600, description="Seconds the partition pauses after a write failed (disk full...).",
        examples=[5],
    )


class ArchiveUnreadable(ConnectorError):
    """An existing archive file that is not the sink's JSON lines."""


class JsonlFileSink(Sink):
    """Appends a subscription's records to rotating JSON-lines files, each record once."""

    config_model: ClassVar[type[ConnectorConfig]] = JsonlSinkConfig

    def __init__(self, config: ConnectorConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, JsonlSinkConfig)
        self.config: JsonlSinkConfig = config
        self.folder = Path(config.path)
        self.prefix = config.prefix or self.name
        self._pattern = re.compile(rf"^{re.escape(self.prefix)}-(\d{{6,}})-\d{{8}}T\d{{6}}Z{re.escape(_SUFFIX)}$")
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._file_path: Path | None = None
        self._size = 0
        self._sequence = 0
        self._new_file = False
        self._dirty = False
        self._created: list[Path] = []
        #: Highest offset written per (topic, partition): what a replay must skip.
        self.last_written: dict[TP, int] = {}
        self.written = 0
        self.skipped = 0

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConnectorError(
                f"connector {self.name!r} cannot create its archive folder {self.folder} ({exc.strerror}); create it "
                "or set `path`"
            ) from exc
        files = self.archive_files()
        for path in files:
            self._scan(path, last=path == files[-1])
        if files:
            self._sequence = int(self._pattern.match(files[-1].name).group(1))  # type: ignore[union-attr]
            self._open(files[-1])
        self.log.info("archive opened", path=str(self.folder), files=len(files),
                      partitions={f"{t}[{p}]": o for (t, p), o in sorted(self.last_written.items())})

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._sync()
                self._file.close()
                self._file = None

    def status_detail(self) -> dict[str, Any]:
        return {"path": str(self.folder), "file": self._file_path.name if self._file_path else None,
                "file_bytes": self._size, "written": self.written, "skipped_as_already_archived": self.skipped}

    def archive_files(self) -> list[Path]:
        """The sink's files in writing order."""
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := self._pattern.match(p.name))]
        return [p for _, p in sorted(found)]

    def _scan(self, path: Path, *, last: bool) -> None:
        """Note the offsets in ``path``; cut a partial last line of the newest file."""
        good_bytes = 0
        with path.open("rb") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.endswith(b"\n"):
                    if last:
                        break  # written when the process died: never committed, delivered again
                    raise ArchiveUnreadable(f"{path} line {number} is cut short, and it is not the newest file; "
                                            "move the file out of the archive folder")
                try:
                    entry = json.loads(line)
                    key = (str(entry["topic"]), int(entry["partition"]))
                    offset = int(entry["offset"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ArchiveUnreadable(
                        f"{path} line {number} is not an archive line ({type(exc).__name__}: {exc}); move the file "
                        "out of the archive folder"
                    ) from None
                if offset > self.last_written.get(key, -1):
                    self.last_written[key] = offset
                good_bytes += len(line)
        if path.stat().st_size != good_bytes:
            self.log.warning("cut a partial last line left by a crash", file=path.name,
                             bytes=path.stat().st_size - good_bytes)
            os.truncate(path, good_bytes)

    # -- writing -------------------------------------------------------------------------

    def write(self, batch: SinkBatch) -> None:
        key = (batch.topic, batch.partition)
        with self._lock:
            before = self.last_written.get(key)
            mark = (self._file_path, self._size, self._sequence)
            self._created = []
            try:
                for record in batch:
                    offset = record.raw.offset if record.raw.offset is not None else -1
                    if offset <= self.last_written.get(key, -1):
                        self.skipped += 1
                        continue
                    self._append(self.line(record))
                    self.last_written[key] = offset
                    self.written += 1
                    self.context.monitor.on_delivered(record.raw, file=self._file_path.name if self._file_path else None)
                if self._file is not None:
                    self._file.flush()
            except OSError as exc:
                self._undo(key, before, mark)
                raise Backpressure(self.config.retry_after_s, batch.topic, batch.partition,
                                   f"cannot write to {self.folder}: {exc.strerror or exc}") from exc

    def flush(self) -> None:
        with self._lock:
            if self._file is not None and self._dirty:
                self._sync()

    @staticmethod
    def line(record: SinkRecord) -> str:
        """The archive line of one record (with its newline)."""
        raw = record.raw
        entry = {
            "topic": raw.topic, "partition": raw.partition, "offset": raw.offset, "key": raw.key_text,
            "id": raw.header("ce_id"), "type": raw.header("ce_type"), "source": raw.header("ce_source"),
            "time": raw.header("ce_time"), "subject": raw.header("ce_subject"), "traceparent": raw.traceparent,
            "value": record.value,
        }
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        if self._file is None or (self._size > 0 and self._size + len(data) > self.config.max_bytes):
            self._rotate()
        assert self._file is not None
        self._file.write(text)
        self._size += len(data)
        self._dirty = True

    def _rotate(self) -> None:
        if self._file is not None:
            self._sync()
            self._file.close()
        self._sequence += 1
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.folder / f"{self.prefix}-{self._sequence:06d}-{stamp}{_SUFFIX}"
        self._open(path)
        self._created.append(path)
        self._new_file = True
        self.log.info("archive file started", file=self._file_path.name if self._file_path else None)

    def _open(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8", newline="\n")
        self._file_path = path
        self._size = path.stat().st_size

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        if self.config.fsync:
            os.fsync(self._file.fileno())
            if self._new_file:
                directory = os.open(self.folder, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        self._new_file = False
        self._dirty = False

    def _undo(self, key: TP, before: int | None, mark: tuple[Path | None, int, int]) -> None:
        """Forget a batch that could not be written whole: remove the files it started and
        cut the file it began in back to where it began."""
        if before is None:
            self.last_written.pop(key, None)
        else:
            self.last_written[key] = before
        path, size, sequence = mark
        try:
            if self._file is not None:
                self._file.close()
            self._file, self._file_path, self._size, self._sequence = None, None, 0, sequence
            for created in self._created:
                created.unlink(missing_ok=True)
            if path is not None and path.exists():
                os.truncate(path, size)
                self._open(path)
        except OSError as exc:
            self.log.warning("could not cut the archive back after a failed write", file=str(path), error=str(exc))


__all__ = ["ArchiveUnreadable", "JsonlFileSink", "JsonlSinkConfig"]
