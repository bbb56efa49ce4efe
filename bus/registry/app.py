"""The Confluent Schema Registry REST API subset, as a Starlette ASGI app over a SchemaStore.

It serves what confluent-kafka's ``SchemaRegistryClient`` (and its Avro serializer and
deserializer) call, with Confluent's response fields and error bodies
(``{"error_code": 40401, "message": "..."}``). Store calls can block on a Kafka flush,
so they run in Starlette's thread pool.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bus.registry.exceptions import (
    BadRequest,
    InvalidCompatibilityLevel,
    InvalidVersion,
    RegistryError,
    SchemaNotFound,
)
from bus.registry.store import RegisteredVersion, SchemaStore, VersionRef

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_VERSION = 2**31 - 1

Endpoint = Callable[[Request], Awaitable[Response]]


class RegistryResponse(JSONResponse):
    media_type = CONTENT_TYPE


def error_response(status: int, code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": code, "message": message}, status_code=status)


def _endpoint(handler: Callable[[Request, SchemaStore], Awaitable[Any]]) -> Endpoint:
    """Turns a handler's result into JSON and the registry's errors into Confluent's bodies."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        store: SchemaStore = request.app.state.store
        try:
            return RegistryResponse(await handler(request, store))
        except RegistryError as exc:
            return error_response(exc.http_status, exc.error_code, str(exc))
        except Exception as exc:  # answer, log, and keep serving
            log.exception("registry request failed", method=request.method, path=request.url.path)
            return error_response(500, 50001, f"Error in the registry: {exc}")

    return endpoint


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(fn, *args, **kwargs)


# ------------------------------------------------------------------------ request parts


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").strip().lower() == "true"


def _version(raw: str) -> VersionRef:
    if raw == "latest":
        return "latest"
    try:
        number = int(raw)
    except ValueError:
        raise InvalidVersion(raw) from None
    if number == -1:
        return "latest"
    if not 1 <= number <= MAX_VERSION:
        raise InvalidVersion(raw)
    return number


def _schema_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SchemaNotFound(f"Schema {raw} not found: a schema id is a number.") from None


def _subject(request: Request) -> str:
    return request.path_params["subject"]


def _version_body(registered: RegisteredVersion) -> dict[str, Any]:
    return {
        "subject": registered.subject,
        "version": registered.version,
        "id": registered.id,
        "schema": registered.schema,
    }


def _schema_args(body: dict[str, Any]) -> dict[str, Any]:
    return {"schema_type": body.get("schemaType"), "references": body.get("references")}


# ---------------------------------------------------------------------------- handlers


async def root(request: Request, store: SchemaStore) -> dict[str, Any]:
    return {}


async def schema_types(request: Request, store: SchemaStore) -> list[str]:
    return ["AVRO"]


async def schema_by_id(request: Request, store: SchemaStore) -> dict[str, Any]:
    return {"schema": await _call(store.schema_by_id, _schema_id(request.path_params["id"]))}


async def raw_schema_by_id(request: Request, store: SchemaStore) -> Any:
    return json.loads(await _call(store.schema_by_id, _schema_id(request.path_params["id"])))


async def versions_of_id(request: Request, store: SchemaStore) -> list[dict[str, Any]]:
    usages = await _call(
        store.usages_of_id, _schema_id(request.path_params["id"]), deleted=_flag(request, "deleted")
    )
    wanted = request.query_params.get("subject")
    return [{"subject": s, "version": v} for s, v in usages if wanted in (None, s)]


async def subjects_of_id(request: Request, store: SchemaStore) -> list[str]:
    usages = await _call(
        store.usages_of_id, _schema_id(request.path_params["id"]), deleted=_flag(request, "deleted")
    )
    wanted = request.query_params.get("subject")
    return sorted({s for s, _ in usages if wanted in (None, s)})


async def list_subjects(request: Request, store: SchemaStore) -> list[str]:
    return await _call(
        store.subjects, deleted=_flag(request, "deleted"), prefix=request.query_params.get("subjectPrefix")
    )


async def list_versions(request: Request, store: SchemaStore) -> list[int]:
    deleted = _flag(request, "deleted") or _flag(request, "deleted_only")
    versions: list[int] = await _call(store.versions, _subject(request), deleted=deleted)
    if _flag(request, "deleted_only"):
        live = set(await _call(_live_versions, store, _subject(request)))
        versions = [v for v in versions if v not in live]
    return versions


def _live_versions(store: SchemaStore, subject: str) -> list[int]:
    try:
        return store.versions(subject)
    except RegistryError:
        return []


async def register(request: Request, store: SchemaStore) -> dict[str, Any]:
    body = await _body(request)
    registered = await _call(store.register, _subject(request), body.get("schema"), **_schema_args(body))
    return {"id": registered.id, "subject": registered.subject, "version": registered.version}


async def get_version(request: Request, store: SchemaStore) -> dict[str, Any]:
    version = _version(request.path_params["version"])
    registered = await _call(store.get_version, _subject(request), version, deleted=_flag(request, "deleted"))
    return _version_body(registered)


async def get_version_schema(request: Request, store: SchemaStore) -> Any:
    version = _version(request.path_params["version"])
    registered = await _call(store.get_version, _subject(request), version, deleted=_flag(request, "deleted"))
    return json.loads(registered.schema)


async def delete_version(request: Request, store: SchemaStore) -> int:
    version = _version(request.path_params["version"])
    permanent = _flag(request, "permanent")
    return await _call(store.delete_version, _subject(request), version, permanent=permanent)


async def lookup(request: Request, store: SchemaStore) -> dict[str, Any]:
    body = await _body(request)
    deleted = _flag(request, "deleted")
    registered = await _call(store.lookup, _subject(request), body.get("schema"), deleted=deleted, **_schema_args(body))
    return _version_body(registered)


async def delete_subject(request: Request, store: SchemaStore) -> list[int]:
    return await _call(store.delete_subject, _subject(request), permanent=_flag(request, "permanent"))


async def check_version(request: Request, store: SchemaStore) -> dict[str, Any]:
    return await _check(request, store, _version(request.path_params["version"]))


async def check_all(request: Request, store: SchemaStore) -> dict[str, Any]:
    return await _check(request, store, None)


async def _check(request: Request, store: SchemaStore, version: VersionRef | None) -> dict[str, Any]:
    body = await _body(request)
    schema = body.get("schema")
    _mode, problems = await _call(store.check, _subject(request), schema, version, **_schema_args(body))
    answer: dict[str, Any] = {"is_compatible": not problems}
    if _flag(request, "verbose"):
        answer["messages"] = [p.message for p in problems]
    return answer


async def get_config(request: Request, store: SchemaStore) -> dict[str, Any]:
    mode = await _call(store.compatibility, request.path_params.get("subject"))
    return {"compatibilityLevel": mode.value}


async def put_config(request: Request, store: SchemaStore) -> dict[str, Any]:
    body = await _body(request)
    level = body.get("compatibility") or body.get("compatibilityLevel")
    if not isinstance(level, str):
        raise InvalidCompatibilityLevel(
            "Invalid compatibility level: send {\"compatibility\": LEVEL} with LEVEL one of NONE, "
            "BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
        )
    mode = await _call(store.set_compatibility, level, request.path_params.get("subject"))
    return {"compatibility": mode.value}


async def delete_config(request: Request, store: SchemaStore) -> dict[str, Any]:
    before = await _call(store.delete_compatibility, request.path_params.get("subject"))
    return {"compatibilityLevel": before.value}


async def get_mode(request: Request, store: SchemaStore) -> dict[str, Any]:
    return {"mode": "READWRITE"}


# ------------------------------------------------------------------------------- app


def _routes() -> list[Route]:
    table: list[tuple[str, Callable[[Request, SchemaStore], Awaitable[Any]], list[str]]] = [
        ("/", root, ["GET"]),
        ("/schemas/types", schema_types, ["GET"]),
        ("/schemas/ids/{id}", schema_by_id, ["GET"]),
        ("/schemas/ids/{id}/schema", raw_schema_by_id, ["GET"]),
        ("/schemas/ids/{id}/versions", versions_of_id, ["GET"]),
        ("/schemas/ids/{id}/subjects", subjects_of_id, ["GET"]),
        ("/subjects", list_subjects, ["GET"]),
        ("/subjects/{subject}", lookup, ["POST"]),
        ("/subjects/{subject}", delete_subject, ["DELETE"]),
        ("/subjects/{subject}/versions", list_versions, ["GET"]),
        ("/subjects/{subject}/versions", register, ["POST"]),
        ("/subjects/{subject}/versions/{version}", get_version, ["GET"]),
        ("/subjects/{subject}/versions/{version}", delete_version, ["DELETE"]),
        ("/subjects/{subject}/versions/{version}/schema", get_version_schema, ["GET"]),
        ("/compatibility/subjects/{subject}/versions", check_all, ["POST"]),
        ("/compatibility/subjects/{subject}/versions/{version}", check_version, ["POST"]),
        ("/config", get_config, ["GET"]),
        ("/config", put_config, ["PUT"]),
        ("/config", delete_config, ["DELETE"]),
        ("/config/{subject}", get_config, ["GET"]),
        ("/config/{subject}", put_config, ["PUT"]),
        ("/config/{subject}", delete_config, ["DELETE"]),
        ("/mode", get_mode, ["GET"]),
        ("/mode/{subject}", get_mode, ["GET"]),
    ]
    return [Route(path, _endpoint(handler), methods=methods) for path, handler, methods in table]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return error_response(status, status, f"HTTP {status} {detail}")


def create_app(store: SchemaStore) -> Starlette:
    """The registry app over an opened store."""
    app = Starlette(routes=_routes(), exception_handlers={HTTPException: _http_error})
    app.state.store = store
    return app
