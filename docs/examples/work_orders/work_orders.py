"""The street lighting administration's work orders: a connector written with the kit, as a
department writes its own (docs/connectors.md builds it step by step).

The administration's maintenance system imports work orders as JSON files from a folder it
watches. This sink delivers the department's subscription ``streetlight-cases`` (broken
street lights that city management dispatched to it) there: one file per case update.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from bus.connect import Backpressure, ConnectorConfig, RecordFailed, Sink, SinkBatch, SinkContext, SinkRecord


class WorkOrderFolderConfig(ConnectorConfig):
    """Settings of a `work_order_folder` sink."""

    folder: str = Field(
        min_length=1, description="The folder the maintenance system imports work orders from (created if missing).",
        examples=["/srv/maintenance/inbox"],
    )
    retry_after_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds to wait before writing again when the folder cannot be written "
        "(disk full, share not mounted).", examples=[10],
    )


class WorkOrderFolder(Sink):
    """Writes each case update of the subscription as one work-order file."""

    config_model: ClassVar[type[ConnectorConfig]] = WorkOrderFolderConfig

    def __init__(self, config: ConnectorConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, WorkOrderFolderConfig)
        self.config: WorkOrderFolderConfig = config
        self.folder = Path(config.folder)

    def setup(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, batch: SinkBatch) -> None:
        for record in batch:
            if record.value is None:  # a tombstone: nothing for the maintenance system
                continue
            try:
                order = work_order(record)
            except RecordFailed as exc:
                self.dead_letter(record, exc)
                continue
            try:
                self._write_file(f"{record.ce_id}.json", order)
            except OSError as exc:
                raise Backpressure(self.config.retry_after_s, batch.topic, batch.partition, str(exc)) from exc
            self.context.monitor.on_delivered(record.raw, order=order["order_id"])

    def flush(self) -> None:
        """The runner commits the offsets after this: the files must survive a power cut by then."""
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def status_detail(self) -> dict[str, Any]:
        return {"folder": str(self.folder)}

    def _write_file(self, name: str, order: dict[str, Any]) -> None:
        """Written under a name the maintenance system ignores, then renamed: it never reads
        half a file. The same update written again replaces its file."""
        partial = self.folder / f".{name}.part"
        with partial.open("w", encoding="utf-8") as out:
            json.dump(order, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.folder / name)


def work_order(record: SinkRecord) -> dict[str, Any]:
    """The maintenance system's work order for one case update. A crew is sent to a pole,
    so a case without the pole's number (``component_id``) cannot become a work order."""
    case = record.value
    if not case.get("component_id"):
        raise RecordFailed(f"case {case['case_id']} names no pole (component_id)", record.raw, retriable=False)
    return {
        "order_id": case["case_id"],
        "update_id": record.ce_id,
        "status": case["status"],
        "pole": case["component_id"],
        "title": case["title"],
        "district": case["district"],
        "respond_by": case.get("respond_by"),
        "resolve_by": case.get("resolve_by"),
    }
