"""File-drop source: legacy systems that can only export files (nightly CSV dumps, JSON
lines exports) drop them in a folder; each row becomes a record of one event type.

- **Which files.** Files of ``path`` matching ``pattern`` (``*.csv``, ``*.jsonl``); never
  hidden files nor names ending in ``ignore_suffixes`` (``.part``, ``.tmp``: an export
  still being written under a temporary name). A file is taken only once its size and
  modification time stayed the same for ``settle_s`` seconds, so a file still being
  written in place is not read half-way. Oldest first.
- **Rows.** JSON lines: one JSON object per line. CSV: a header row names the fields;
  cells are converted by the event type's Avro schema (int/long, float/double, boolean,
  enums, dates, timestamps (RFC 3339, epoch milliseconds, or a naive time in
  ``naive_timezone``), arrays and maps as JSON text; an empty cell of a nullable field is
  null, of a field with a default the default). Dotted headers (``location.district``)
  fill nested records. ``columns`` renames headers, ``ignore_columns`` skips some.
- **Exactly once per file.** The position in the kit's offset store is the file's
  identity (name, size, SHA-256 of its content) and the last line whose records are on the
  bus, saved after every chunk of ``batch_lines`` rows the broker acknowledged. A stopped
  connector resumes at the next line; a finished file is moved to ``done_dir`` (or, with
  ``done_dir: null``, left in place and its identity kept in the position), so it is never
  read again. The same name dropped again with another content is a new file.
  A process killed between the broker's acknowledgement of a chunk and the saving of the
  position (a few milliseconds per chunk) publishes that chunk again when it restarts.
- **Bad rows** go to the dead-letter topic, the connector goes on: the dead letter's value
  is the raw line, its key the file name, and the file and line are in the Kafka Connect
  context headers (``__connect.errors.topic`` = file name, ``__connect.errors.offset`` =
  line number) and in the ``file_drop_file`` / ``file_drop_line`` headers. A file that
  cannot be read as a whole (a CSV header naming no field of the schema, a missing
  required column) is one dead letter (its header line) and is moved to ``rejected_dir``.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from bus.connect.base import Source, SourceContext
from bus.connect.config import ConnectorConfig
from bus.connect.exceptions import ConnectorError, ConnectorFailed, Interrupted
from bus.connect.records import RawRecord
from bus.errors import BusError
from bus.kafka.exceptions import KafkaError
from bus.registry.exceptions import RegistryUnreachable
from bus.schemas.catalog import EventSchema
from bus.schemas.records import to_datum

FILE_HEADER = "file_drop_file"
LINE_HEADER = "file_drop_line"
_CHUNK_READ = 1 << 20


class FileDropConfig(ConnectorConfig):
    """Settings of a `file_drop` source."""

    path: str = Field(
        min_length=1, description="Folder the legacy system drops its export files in.",
        examples=["/srv/exports/population"],
    )
    pattern: str = Field(
        "*", min_length=1, description="File names taken (shell pattern, matched against the name only).",
        examples=["*.csv", "*.jsonl"],
    )
    format: Literal["auto", "csv", "jsonl"] = Field(
        "auto", description="How files are read: `csv` (header row), `jsonl` (one JSON object per line), or "
        "`auto` (by suffix: .csv is CSV, anything else JSON lines).", examples=["auto", "csv"],
    )
    event_type: str = Field(
        description="Event type every row becomes; must be in the connector's `publishes`.",
        examples=["population_change"],
    )
    settle_s: float = Field(
        5.0, ge=0, le=3600, description="Seconds a file's size and modification time must stay unchanged "
        "before it is taken (a file still being written is left alone).", examples=[5, 30],
    )
    ignore_suffixes: list[str] = Field(
        default_factory=lambda: [".part", ".tmp", ".partial", ".crdownload"],
        description="Names ending so are files still being written under a temporary name: never taken.",
        examples=[[".part", ".tmp"]],
    )
    done_dir: str | None = Field(
        "done", description="Where finished files are moved (relative to `path`, or absolute). null: files stay "
        "where they are and their identity is kept in the connector's position.", examples=["done", None],
    )
    rejected_dir: str = Field(
        "rejected", min_length=1, description="Where files that cannot be read as a whole (bad CSV header) are "
        "moved (relative to `path`, or absolute).", examples=["rejected"],
    )
    poll_interval_s: float = Field(
        2.0, gt=0, le=3600, description="Seconds between two looks at the folder.", examples=[2, 10],
    )
    batch_lines: int = Field(
        500, ge=1, le=100_000, description="Rows published together; the position is saved after each such "
        "chunk is acknowledged.", examples=[500],
    )
    encoding: str = Field(
        "utf-8", description="Text encoding of the files (a BOM at the start is skipped).", examples=["utf-8", "gbk"],
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field separator.", examples=[",", ";"])
    columns: dict[str, str] = Field(
        default_factory=dict, description="CSV header -> field path, for headers that are not named as the field.",
        examples=[{"PERSON_NO": "person_id", "DISTRICT": "district"}],
    )
    ignore_columns: list[str] = Field(
        default_factory=list, description="CSV headers that are not fields and are skipped.",
        examples=[["export_batch"]],
    )
    naive_timezone: str | None = Field(
        None, description="Time zone of CSV timestamps written without a UTC offset (`2026-11-23 08:30:00`); "
        "without it such cells are bad rows.", examples=["Asia/Shanghai"],
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            "".encode(value)
        except LookupError:
            raise PydanticCustomError("connector_encoding", "unknown text encoding '{value}'; write e.g. utf-8 or gbk",
                                      {"value": value}) from None
        return value

    @field_validator("naive_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise PydanticCustomError("connector_timezone", "unknown time zone '{value}'; write an IANA name "
                                          "such as Asia/Shanghai", {"value": value}) from None
        return value


class RowInvalid(ConnectorError):
    """A row of a dropped file that cannot become a record."""


class FileRejected(ConnectorError):
    """A dropped file that cannot be read as a whole."""

    def __init__(self, message: str, line: int, text: bytes) -> None:
        self.line = line
        self.text = text
        super().__init__(message)


@dataclass(frozen=True)
class FileIdentity:
    """A file as the connector knows it: same name and same content is the same file."""

    name: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Any) -> "FileIdentity | None":
        try:
            return cls(str(data["name"]), int(data["size"]), str(data["sha256"]))
        except (TypeError, KeyError, ValueError):
            return None

    @classmethod
    def of(cls, path: Path) -> "FileIdentity":
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK_READ):
                digest.update(chunk)
                size += len(chunk)
        return cls(path.name, size, digest.hexdigest())


@dataclass
class Row:
    """One row: the lines it spans, its raw text and the record (or why there is none)."""

    first_line: int
    last_line: int
    text: bytes
    record: dict[str, Any] | None = None
    problem: str | None = None


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class Progress:
    """What status_detail shows."""

    current: str | None = None
    line: int = 0
    files_done: int = 0
    files_rejected: int = 0
    rows_published: int = 0
    rows_dead_lettered: int = 0
    waiting: list[str] = field(default_factory=list)


class FileDrop(Source):
    """Publishes the rows of CSV and JSON-lines files dropped in a folder, each file once."""

    config_model: ClassVar[type[ConnectorConfig]] = FileDropConfig

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, FileDropConfig)
        self.config: FileDropConfig = config
        self.folder = Path(config.path)
        self.progress = Progress()
        self._seen: dict[str, _Seen] = {}
        #: Files done before and left in place (done_dir: null): (size, mtime) when last looked at.
        self._left: dict[str, tuple[int, int]] = {}
        self._zone = ZoneInfo(config.naive_timezone) if config.naive_timezone else None
        self._schema: EventSchema | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        self.check_publishes(self.config.event_type)
        if not self.folder.is_dir():
            raise ConnectorError(
                f"connector {self.name!r}: the drop folder {self.folder} does not exist; create it or set `path`"
            )
        self._schema = self.context.topology.schema_for(self.config.event_type)
        for folder in (self._done_folder(), self._folder(self.config.rejected_dir)):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def status_detail(self) -> dict[str, Any]:
        p = self.progress
        return {"path": str(self.folder), "pattern": self.config.pattern, "event_type": self.config.event_type,
                "current_file": p.current, "line": p.line, "files_done": p.files_done,
                "files_rejected": p.files_rejected, "rows_published": p.rows_published,
                "rows_dead_lettered": p.rows_dead_lettered, "waiting": list(p.waiting)}

    def _folder(self, name: str) -> Path:
        target = Path(name)
        return target if target.is_absolute() else self.folder / target

    def _done_folder(self) -> Path | None:
        return self._folder(self.config.done_dir) if self.config.done_dir is not None else None

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.mark_ready()
        while self.running:
            self.wait_while_paused()
            for path in self.ready_files():
                if not self.running or self.paused:
                    break
                self.take(path)
            self.context.stopping.wait(self.config.poll_interval_s)

    def ready_files(self) -> list[Path]:
        """Files to take now, oldest first: matching, not temporary, settled."""
        now = time.monotonic()
        candidates: list[tuple[int, str, Path]] = []
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            self.log.warning("cannot list the drop folder", path=str(self.folder), error=str(exc))
            return []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not fnmatch.fnmatchcase(name, self.config.pattern):
                continue
            if any(name.endswith(s) for s in self.config.ignore_suffixes):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            present.add(name)
            if self._left.get(name) == (stat.st_size, stat.st_mtime_ns):
                continue
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._seen[name] = seen = _Seen(stat.st_size, stat.st_mtime_ns, now)
            if now - seen.since >= self.config.settle_s:
                candidates.append((stat.st_mtime_ns, name, Path(entry.path)))
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._left) - present:
            del self._left[gone]
        candidates.sort()
        ready = [path for _, _, path in candidates]
        self.progress.waiting = sorted(present - set(self._left) - {p.name for p in ready})
        return ready

    def take(self, path: Path) -> None:
        """Publish the rows of one file not yet done, from where a previous run stopped."""
        try:
            stat = path.stat()
            identity = FileIdentity.of(path)
        except OSError as exc:
            self.log.warning("cannot read a dropped file; will try again", file=path.name, error=str(exc))
            return
        self._seen.pop(path.name, None)
        position = self.position or {}
        if identity.as_dict() in position.get("finished", []):
            self._left[path.name] = (stat.st_size, stat.st_mtime_ns)  # done before, left in place
            return
        start_after = 0
        current = FileIdentity.from_dict(position.get("file"))
        if current == identity:
            start_after = int(position.get("line", 0))
        elif current is not None and current.name == identity.name:
            self.log.warning("a half-read file was replaced by another content; reading the new one from its start",
                             file=path.name, line=position.get("line"))
        self.progress.current, self.progress.line = path.name, start_after
        self.log.info("taking file", file=path.name, size=identity.size, resume_after_line=start_after)
        try:
            for chunk in _chunks(self.rows(path, start_after), self.config.batch_lines):
                self.wait_while_paused()
                self.check_running()
                self._publish_chunk(path.name, identity, chunk)
        except FileRejected as rejected:
            self._reject(path, identity, rejected)
        except OSError as exc:  # removed or unreadable half-way: what was published stays saved
            self.log.warning("cannot read a dropped file; will try again", file=path.name, error=str(exc))
        else:
            self._finish(path, identity, (stat.st_size, stat.st_mtime_ns))
        self.progress.current = None

    # -- reading -------------------------------------------------------------------------

    def rows(self, path: Path, start_after: int = 0) -> Iterator[Row]:
        """The rows of a file after line ``start_after`` (raises FileRejected for a bad CSV header)."""
        fmt = self.config.format
        if fmt == "auto":
            fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        with path.open("rb") as stream:
            lines = _numbered_lines(stream, self.config.encoding)
            rows = self._csv_rows(lines) if fmt == "csv" else self._jsonl_rows(lines)
            for row in rows:
                if row.last_line > start_after:
                    yield row

    def _jsonl_rows(self, lines: Iterator[tuple[int, bytes, str | None]]) -> Iterator[Row]:
        for number, raw, text in lines:
            row = Row(number, number, raw.rstrip(b"\r\n"))
            if text is None:
                row.problem = f"line {number} is not valid {self.config.encoding} text"
            elif not text.strip():
                continue
            else:
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    row.problem = f"line {number} is not JSON: {exc}"
                else:
                    if isinstance(value, dict):
                        row.record = value
                    else:
                        row.problem = f"line {number} is JSON but not an object"
            yield row

    def _csv_rows(self, lines: Iterator[tuple[int, bytes, str | None]]) -> Iterator[Row]:
        consumed: list[tuple[int, bytes, str | None]] = []

        def texts() -> Iterator[str]:
            for item in lines:
                consumed.append(item)
                yield item[2] if item[2] is not None else item[1].decode(self.config.encoding, "replace")

        reader = csv.reader(texts(), delimiter=self.config.delimiter)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise FileRejected(f"the CSV header is not CSV ({exc})", consumed[-1][0], consumed[-1][1]) from exc
        if header is None:
            return
        header_lines, consumed[:] = list(consumed), []
        fields = self._header_fields(header, header_lines)
        while True:
            broken: str | None = None
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, an oversized field...: this row only
                cells, broken = [], str(exc)
            spanned, consumed[:] = list(consumed), []
            row = Row(spanned[0][0], spanned[-1][0], b"".join(raw for _, raw, _ in spanned).rstrip(b"\r\n"))
            if broken is None and not any(c.strip() for c in cells):
                continue
            if broken is not None:
                row.problem = f"line {row.first_line} is not CSV ({broken})"
            elif any(text is None for _, _, text in spanned):
                row.problem = f"line {row.first_line} is not valid {self.config.encoding} text"
            elif len(cells) != len(header):
                row.problem = f"line {row.first_line} has {len(cells)} cells, the header has {len(header)}"
            else:
                try:
                    row.record = self.record_of(fields, cells)
                except RowInvalid as exc:
                    row.problem = f"line {row.first_line}: {exc}"
            yield row

    def _header_fields(self, header: list[str], lines: list[tuple[int, bytes, str | None]]) -> list[str | None]:
        """Field path of each column (None: skipped); FileRejected when the header cannot work."""
        assert self._schema is not None
        raw = b"".join(r for _, r, _ in lines).rstrip(b"\r\n")
        last = lines[-1][0] if lines else 1
        known = {path for path in self._schema.fields}
        fields: list[str | None] = []
        problems: list[str] = []
        for name in header:
            name = name.strip()
            if name in self.config.ignore_columns:
                fields.append(None)
                continue
            path = self.config.columns.get(name, name)
            if path not in known:
                problems.append(f"column {name!r} is no field of {self._schema.name}")
            elif path in fields:
                problems.append(f"column {name!r} fills {path}, which another column fills too")
            fields.append(path)
        top = {f.split(".")[0] for f in fields if f}
        for info in self._schema.fields.values():
            if "." not in info.path and not info.has_default and not info.nullable and info.path not in top:
                problems.append(f"required field {info.path} has no column")
        if problems:
            raise FileRejected(
                f"the CSV header (line {last}) cannot be read as {self._schema.name}: {'; '.join(problems)}. Rename "
                "the columns, or map them with `columns` / skip them with `ignore_columns`", last, raw,
            )
        return fields

    def record_of(self, fields: list[str | None], cells: list[str]) -> dict[str, Any]:
        """The JSON record of one CSV row, cells converted by the schema's field types."""
        assert self._schema is not None
        record: dict[str, Any] = {}
        problems: list[str] = []
        for path, cell in zip(fields, cells):
            if path is None:
                continue
            info = self._schema.fields[path]
            try:
                value = self.cell_value(self._schema.resolve(info.type), cell)
            except RowInvalid as exc:
                problems.append(f"{path}: {exc}")
                continue
            if value is None and info.has_default:
                continue  # an empty cell: the field's default
            _put(record, path.split("."), value)
        if problems:
            raise RowInvalid("; ".join(problems))
        return _prune_empty_records(record, self._schema)

    def cell_value(self, avro_type: Any, cell: str) -> Any:
        """One cell as the JSON value ``to_datum`` takes for ``avro_type``; an empty cell is
        None (null, or the field's default), except for a string."""
        assert self._schema is not None
        avro_type = self._schema.resolve(avro_type)
        text = cell.strip()
        if isinstance(avro_type, list):
            if not text and "null" in avro_type:
                return None
            branches = [b for b in avro_type if b != "null"]
            problem = ""
            for branch in branches:
                try:
                    return self.cell_value(branch, cell)
                except RowInvalid as exc:
                    problem = str(exc)
            raise RowInvalid(problem)
        kind = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if kind == "string" and logical is None:
            return cell
        if not text:
            return None
        if logical in ("timestamp-millis", "timestamp-micros"):
            return self._timestamp(text)
        if logical is not None:
            return text  # dates, uuids, decimals: to_datum checks them
        if kind in ("int", "long"):
            try:
                return int(text)
            except ValueError:
                raise RowInvalid(f"{text!r} is not a whole number") from None
        if kind in ("float", "double"):
            try:
                return float(text)
            except ValueError:
                raise RowInvalid(f"{text!r} is not a number") from None
        if kind == "boolean":
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "y", "t"):
                return True
            if lowered in ("false", "0", "no", "n", "f"):
                return False
            raise RowInvalid(f"{text!r} is not true or false")
        if kind in ("array", "map", "record"):
            try:
                return json.loads(text)
            except ValueError:
                raise RowInvalid(f"{text!r} is not JSON (lists, maps and records are written as JSON in a cell)") \
                    from None
        return text  # enums, bytes (base64): to_datum checks them

    def _timestamp(self, text: str) -> Any:
        if text.lstrip("-").isdigit():
            return int(text)  # epoch milliseconds
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise RowInvalid(f"{text!r} is not a time; write e.g. 2026-11-23T08:30:00+08:00") from None
        if parsed.tzinfo is None:
            if self._zone is None:
                raise RowInvalid(f"{text!r} has no UTC offset; add one, or set `naive_timezone` in the config")
            parsed = parsed.replace(tzinfo=self._zone)
        return parsed.isoformat()

    # -- publishing ----------------------------------------------------------------------

    def _publish_chunk(self, name: str, identity: FileIdentity, rows: list[Row]) -> None:
        assert self._schema is not None
        event_type = self.config.event_type
        good: list[Row] = []
        for row in rows:
            if row.problem is None and row.record is not None:
                try:
                    to_datum(self._schema, row.record)
                except BusError as exc:
                    row.problem = f"line {row.first_line}: {exc}"
            if row.problem is None:
                good.append(row)
            else:
                self._dead_letter_row(name, row, RowInvalid(f"{name}: {row.problem}"))
        if good:
            summary = self.produce_many(event_type, [r.record for r in good])
            for number, reason in summary.rejected:
                self._one_more_time(name, good[number - 1], reason)
            self.progress.rows_published += len(good)
        self._advance({**self._kept(), "file": identity.as_dict(), "line": rows[-1].last_line})
        self.flush()
        self.progress.line = rows[-1].last_line

    def _one_more_time(self, name: str, row: Row, reason: str) -> None:
        """A row the publisher did not get acknowledged: its own fault (dead letter) or the
        bus's (published alone, retried with backoff while the bus is away)."""
        retries = self.context.retry.start()
        while True:
            try:
                self.produce(self.config.event_type, row.record)
                return
            except (KafkaError, RegistryUnreachable) as exc:
                delay = retries.next_delay()
                if delay is None:
                    delay = self.context.retry.backoff.max_s
                self.context.monitor.on_retry(self._raw(name, row), exc, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping; the file resumes at this chunk") from exc
            except BusError as exc:
                self.progress.rows_published -= 1
                self._dead_letter_row(name, row, RowInvalid(f"{name}: line {row.first_line}: {exc} ({reason})"))
                return

    def _dead_letter_row(self, name: str, row: Row, error: BaseException) -> None:
        self.dead_letter(self._raw(name, row), error)
        self.progress.rows_dead_lettered += 1

    @staticmethod
    def _raw(name: str, row: Row) -> RawRecord:
        return RawRecord(
            topic=name, partition=None, offset=row.first_line, key=name.encode("utf-8"), value=row.text,
            headers=((FILE_HEADER, name.encode("utf-8")), (LINE_HEADER, str(row.first_line).encode("ascii"))),
            timestamp_ms=int(time.time() * 1000),
        )

    # -- finishing -----------------------------------------------------------------------

    def _kept(self) -> dict[str, Any]:
        """The part of the position that outlives the current file (files left in place)."""
        finished = (self.position or {}).get("finished")
        return {"finished": finished} if finished else {}

    def _finish(self, path: Path, identity: FileIdentity, seen: tuple[int, int]) -> None:
        done = self._done_folder()
        if done is not None:
            _move(self.name, path, done)
            position: dict[str, Any] = {"last_done": identity.as_dict()}
        else:
            position = {"finished": [*self._kept().get("finished", []), identity.as_dict()]}
            self._left[path.name] = seen
        self._advance(position)
        self.flush()
        self.progress.files_done += 1
        self.log.info("file done", file=path.name, moved_to=str(done) if done else None)

    def _reject(self, path: Path, identity: FileIdentity, rejected: FileRejected) -> None:
        name = path.name
        self.dead_letter(self._raw(name, Row(rejected.line, rejected.line, rejected.text)),
                         RowInvalid(f"{name}: {rejected}"))
        _move(self.name, path, self._folder(self.config.rejected_dir))
        self.progress.files_rejected += 1
        self.log.warning("file rejected", file=name, error=str(rejected))


def _put(record: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        record = record.setdefault(part, {})
    record[parts[-1]] = value


def _prune_empty_records(record: dict[str, Any], schema: EventSchema) -> dict[str, Any]:
    """A nested record whose cells are all empty is null (``location`` of a row without a place)."""
    for name, value in list(record.items()):
        if isinstance(value, dict) and all(v is None for v in value.values()):
            info = schema.field(name)
            if info is not None and info.nullable:
                record[name] = None
    return record


def _numbered_lines(stream: Any, encoding: str) -> Iterator[tuple[int, bytes, str | None]]:
    """(line number, raw bytes, text or None when not decodable) of each physical line."""
    for number, raw in enumerate(stream, start=1):
        data = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            text: str | None = data.decode(encoding)
        except UnicodeDecodeError:
            text = None
        yield number, raw, text


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _move(connector: str, path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    try:
        os.replace(path, target)
    except OSError as exc:
        raise ConnectorFailed(
            connector, f"cannot move {path} to {folder} ({exc.strerror}); give the connector write access to "
            "both folders"
        ) from exc


__all__ = ["FileDrop", "FileDropConfig", "FileIdentity", "FileRejected", "RowInvalid"]
