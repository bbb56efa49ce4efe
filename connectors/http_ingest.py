"""HTTP ingest source: a department's system pushes JSON records over HTTP.

Endpoints (``path`` defaults to ``/ingest``):

- ``POST {path}/{event_type}``: one JSON record;
- ``POST {path}/{event_type}/batch``: JSON lines (``application/x-ndjson``), one record
  per line. Every line is checked first: one bad line refuses the whole batch (400, every
  problem with its line number) and nothing is published;
- ``GET /healthz`` (alive) and ``GET /readyz`` (serving, not paused).

The caller is the connector's department, authenticated by ``Authorization: Bearer
<token>`` or by an HMAC-SHA256 signature (``X-Bus-Signature-256: sha256=<hex>``) of
``<timestamp>.`` + the body, the timestamp sent as ``X-Bus-Timestamp`` (Unix seconds) and
refused outside ``auth.signature_max_age_s`` (300 s) of the bus's clock, so that a captured
request cannot be replayed (``bus.connect.signing.sign_request`` makes both headers). Answers:

- 202 once the broker acknowledged every record (JSON: topic, partition, offset, ce_id...);
- 400 with ``problems: [{path, problem}]`` (``line`` too for a batch);
- 401 without valid credentials; 403 for an event type the connector may not publish
  (with an audit log line naming the department, the type and the caller's address);
  404 for an unknown event type; 413 over ``max_body_bytes`` (by Content-Length or by
  the bytes actually received); 429 with Retry-After when ``max_in_flight`` requests are
  being handled; 503 with Retry-After when the broker or registry cannot be reached or
  the connector is paused.

An incoming W3C ``traceparent`` is kept: it becomes the record's ``ce_traceparent``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bus.serving import bind
from bus.connect.base import Source, SourceContext
from bus.connect.config import ConnectorConfig, SecretRef
from bus.connect.exceptions import ConnectorError
from bus.connect.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, timestamped, verify
from bus.kafka.config import MAX_RECORD_BYTES
from bus.kafka.exceptions import KafkaError
from bus.publish.exceptions import InputInvalid, PublishRefused
from bus.publish.jsonl import parse_record
from bus.registry.exceptions import RegistryUnreachable
from bus.schemas.exceptions import FieldProblem, RecordInvalid, RecordTooLarge
from bus.schemas.records import to_datum
from bus.topology.exceptions import UnknownName

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")

Handler = Callable[[Request], Awaitable[Response]]


class IngestAuth(BaseModel):
    """How the department proves who it is: a bearer token, an HMAC key, or both."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    token: SecretRef | None = Field(
        None,
        description="Bearer token the department sends as `Authorization: Bearer <token>` (env:NAME or file:PATH).",
        examples=["env:SKYNET_INGEST_TOKEN"],
    )
    hmac_key: SecretRef | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature of the body the department sends in the signature header "
        "(env:NAME or file:PATH).",
        examples=["file:/run/secrets/skynet-hmac-key"],
    )
    signature_header: str = Field(
        SIGNATURE_HEADER,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Header carrying `sha256=<hex digest>` of the signed bytes.",
        examples=[SIGNATURE_HEADER],
    )
    signature_max_age_s: int = Field(
        300,
        ge=0,
        le=86_400,
        description=f"A signed request must carry `{TIMESTAMP_HEADER}: <Unix seconds>` within this many seconds of "
        "the bus's clock, and its signature covers `<timestamp>.` followed by the body, so that a captured request "
        "cannot be replayed later. 0: accept a signature of the body alone, without a timestamp (replayable; only "
        "for a sender that cannot add one).",
        examples=[300, 0],
    )

    @model_validator(mode="after")
    def _one_credential(self) -> "IngestAuth":
        if self.token is None and self.hmac_key is None:
            raise PydanticCustomError(
                "connector_auth",
                "give the department a credential: `token: env:NAME` (bearer token), `hmac_key: env:NAME` "
                "(signed bodies), or both",
            )
        return self


class HttpIngestConfig(ConnectorConfig):
    """Settings of an `http_ingest` source."""

    auth: IngestAuth = Field(
        description="Credentials of the connector's department.",
        examples=[{"token": "env:SKYNET_INGEST_TOKEN"}],
    )
    host: str = Field(
        "127.0.0.1", description="Address to listen on (loopback by default; 0.0.0.0 for every interface).",
        examples=["127.0.0.1", "0.0.0.0"],
    )
    port: int = Field(8088, ge=0, le=65535, description="Port to listen on (0: any free port).", examples=[8088])
    path: str = Field(
        "/ingest",
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        description="Path prefix: records are POSTed to `<path>/<event_type>` and `<path>/<event_type>/batch`.",
        examples=["/ingest", "/ingest/skynet"],
    )
    max_body_bytes: int = Field(
        MAX_RECORD_BYTES, ge=1, le=MAX_RECORD_BYTES,
        description="Largest single-record body in bytes; larger ones are answered 413.", examples=[65536],
    )
    max_batch_bytes: int = Field(
        16_000_000, ge=1, le=256_000_000, description="Largest JSON-lines batch body in bytes.", examples=[16000000]
    )
    max_batch_records: int = Field(
        10_000, ge=1, description="Most records in one batch.", examples=[10000]
    )
    max_in_flight: int = Field(
        64, ge=1, le=100_000,
        description="Requests handled at once; more are answered 429 with Retry-After.", examples=[64],
    )
    publisher_threads: int = Field(
        4, ge=1, le=64, description="Threads publishing to the broker (each with its own producer).", examples=[4]
    )
    retry_after_s: int = Field(
        1, ge=1, le=3600, description="Retry-After (seconds) sent with 429 and 503 answers.", examples=[1, 5]
    )


class _Refusal(Exception):
    """An answer other than 202, raised where the reason is found."""

    def __init__(self, status: int, error: str, *, problems: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.error = error
        self.problems = problems
        self.headers = headers or {}
        super().__init__(error)

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.error}
        if self.problems is not None:
            body["problems"] = self.problems
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Server(uvicorn.Server):
    """uvicorn, telling the source when it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class HttpIngest(Source):
    """Departments push JSON records over HTTP; each is published after its checks."""

    config_model: ClassVar[type[ConnectorConfig]] = HttpIngestConfig

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, HttpIngestConfig)
        self.config: HttpIngestConfig = config
        self.prefix = config.path.rstrip("/")
        self.in_flight = 0
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket is not None else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{self.port}{self.prefix}"

    def setup(self) -> None:
        self._socket = _bind(self.config.host, self.config.port)
        self._executor = ThreadPoolExecutor(self.config.publisher_threads, thread_name_prefix=f"bus-ingest-{self.name}")
        config = uvicorn.Config(
            self.app(), log_config=None, access_log=False, lifespan="off", log_level="warning",
            timeout_graceful_shutdown=3,
        )
        self._server = _Server(config, self.mark_ready)

    def run(self) -> None:
        assert self._server is not None and self._socket is not None
        self.log.info("http ingest listening", url=self.url, publishes=self.context.connector.publishes)
        if self.running:
            self._server.run(sockets=[self._socket])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._socket is not None:
            self._socket.close()
        self._executor = self._server = self._socket = None

    def status_detail(self) -> dict[str, Any]:
        return {"url": self.url, "in_flight": self.in_flight}

    # -- the app -------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(self.prefix + "/{event_type}", self._guard(self._one), methods=["POST"]),
            Route(self.prefix + "/{event_type}/batch", self._guard(self._batch), methods=["POST"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
        ])

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def _readyz(self, request: Request) -> Response:
        if self.paused or not self.running:
            return JSONResponse({"status": "paused" if self.paused else "stopping"}, status_code=503)
        return JSONResponse({"status": "ready"})

    def _guard(self, handler: Handler) -> Handler:
        """Every refusal as its JSON answer; an unexpected fault as 500 with a log line."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refusal as refusal:
                return refusal.response()
            except ClientDisconnect:
                return Response(status_code=400)
            except Exception as exc:  # a fault of ours, never of the input: logged in full
                self.context.monitor.on_error(exc, stage="task_poll", path=request.url.path)
                self.log.exception("ingest fault", event_type=request.path_params.get("event_type"))
                return JSONResponse({"error": "internal error; the bus team has the details in its log"},
                                    status_code=500)

        return guarded

    async def _one(self, request: Request) -> Response:
        event_type = request.path_params["event_type"]
        body = await self._admit(request, event_type, self.config.max_body_bytes)
        try:
            record = _parse(body)
            published = await self._publishing(self.produce, event_type, record,
                                               traceparent=_traceparent(request))
        finally:
            self.in_flight -= 1
        return JSONResponse(
            {"accepted": 1, "event_type": event_type, "topic": published.topic, "partition": published.partition,
             "offset": published.offset, "key": published.key, "ce_id": published.ce_id,
             "trace_id": published.trace_id},
            status_code=202,
        )

    async def _batch(self, request: Request) -> Response:
        event_type = request.path_params["event_type"]
        body = await self._admit(request, event_type, self.config.max_batch_bytes)
        try:
            records = self._parse_lines(event_type, body)
            summary = await self._publishing(self.produce_many, event_type, records,
                                             traceparent=_traceparent(request))
        finally:
            self.in_flight -= 1
        if summary.rejected:  # only acknowledgements can fail here: every line was checked
            raise _Refusal(
                503, f"{summary.published} of {len(records)} records published; the broker did not acknowledge "
                "the others: send those lines again later",
                problems=[{"line": line, "path": "", "problem": reason} for line, reason in summary.rejected],
                headers=self._retry_after(),
            )
        return JSONResponse({"accepted": summary.published, "event_type": event_type}, status_code=202)

    # -- checks, in order: availability, size, credentials, type, body -------------------

    async def _admit(self, request: Request, event_type: str, limit: int) -> bytes:
        """The body of a request that may be handled; counts it in flight (the caller
        decrements). Raises the refusal otherwise."""
        if self.paused or not self.running:
            raise _Refusal(503, f"connector {self.name!r} is {'paused' if self.paused else 'stopping'}; "
                           "send again later", headers=self._retry_after())
        _check_declared_size(request, limit)
        bearer = _bearer(request)
        if bearer is not None:
            self._check_token(request, event_type, bearer)
            self._check_type(request, event_type)
        elif request.headers.get(self.config.auth.signature_header) is None or self.config.auth.hmac_key is None:
            self._unauthenticated(request, event_type, "no credentials")
        if self.in_flight >= self.config.max_in_flight:
            raise _Refusal(429, f"{self.in_flight} requests are being handled, the most this connector takes; "
                           "send again after Retry-After", headers=self._retry_after())
        self.in_flight += 1
        try:
            body = await _read_limited(request, limit)
            if bearer is None:
                self._check_signature(request, event_type, body)
                self._check_type(request, event_type)
        except BaseException:
            self.in_flight -= 1
            raise
        return body

    def _check_token(self, request: Request, event_type: str, given: str) -> None:
        token = self.config.auth.token
        if token is None or not verify_token(token.get_secret_value(), given):
            self._unauthenticated(request, event_type, "bad bearer token")

    def _check_signature(self, request: Request, event_type: str, body: bytes) -> None:
        auth = self.config.auth
        assert auth.hmac_key is not None
        signed = body
        if auth.signature_max_age_s:
            stamp = request.headers.get(TIMESTAMP_HEADER)
            if stamp is None or not stamp.isascii() or not stamp.isdigit():
                self._unauthenticated(request, event_type, f"no {TIMESTAMP_HEADER} header of Unix seconds")
            assert stamp is not None
            if abs(time.time() - int(stamp)) > auth.signature_max_age_s:
                self._unauthenticated(request, event_type, f"{TIMESTAMP_HEADER} more than "
                                      f"{auth.signature_max_age_s} s from the bus's clock: check the sender's clock")
            signed = timestamped(stamp, body)
        if not verify(auth.hmac_key.get_secret_value(), signed, request.headers.get(auth.signature_header)):
            self._unauthenticated(request, event_type, "bad signature")

    def _unauthenticated(self, request: Request, event_type: str, reason: str) -> None:
        self.log.warning("ingest unauthenticated", audit=True, reason=reason, event_type=event_type,
                         remote=_remote(request))
        header = self.config.auth.signature_header
        signed = "the body" if not self.config.auth.signature_max_age_s else "'<timestamp>.' + the body"
        stamp = "" if not self.config.auth.signature_max_age_s else f" with `{TIMESTAMP_HEADER}: <Unix seconds>`"
        raise _Refusal(
            401,
            f"authenticate with `Authorization: Bearer <token>` or a `{header}: sha256=<HMAC-SHA256 of {signed}>` "
            f"header{stamp} ({reason})",
            headers={"WWW-Authenticate": 'Bearer realm="bus"'},
        )

    def _check_type(self, request: Request, event_type: str) -> None:
        try:
            owner = self.context.topology.event_type(event_type).owner
        except UnknownName as exc:
            raise _Refusal(404, str(exc)) from None
        publishes = self.context.connector.publishes or []
        if event_type in publishes and owner == self.department:
            return
        self.log.warning("ingest refused", audit=True, event_type=event_type, remote=_remote(request),
                         reason=f"the connector publishes {', '.join(publishes)}; {event_type} is owned by {owner}")
        raise _Refusal(
            403,
            f"department {self.department!r} may not publish {event_type} through connector {self.name!r}: it "
            f"publishes {', '.join(publishes)} (the owner of {event_type} is {owner!r})",
        )

    def _parse_lines(self, event_type: str, body: bytes) -> list[Any]:
        schema = self.context.topology.schema_for(event_type)
        records: list[Any] = []
        problems: list[dict[str, Any]] = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = _parse(line.rstrip(b"\r"))
                to_datum(schema, record)
            except _Refusal as refusal:
                problems += [{"line": number, **p} for p in refusal.problems or []]
                continue
            except RecordInvalid as exc:
                problems += [{"line": number, **_problem(p)} for p in exc.problems]
                continue
            records.append(record)
            if len(records) > self.config.max_batch_records:
                raise _Refusal(413, f"the batch has more than {self.config.max_batch_records} records; split it")
        if problems:
            raise _Refusal(400, f"invalid {event_type} batch: nothing was published; fix the lines listed and send "
                           "the batch again", problems=problems)
        if not records:
            raise _Refusal(400, "the batch is empty: send one JSON record per line",
                           problems=[{"line": 1, "path": "", "problem": "no record"}])
        return records

    # -- publishing ----------------------------------------------------------------------

    async def _publishing(self, call: Callable[..., Any], event_type: str, payload: Any, **kwargs: Any) -> Any:
        """Run a blocking publish on a publisher thread; its errors as answers."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: call(event_type, payload, **kwargs))
        except RecordInvalid as exc:
            raise _Refusal(400, f"invalid {event_type} record: nothing was published",
                           problems=[_problem(p) for p in exc.problems]) from None
        except RecordTooLarge as exc:
            raise _Refusal(413, str(exc)) from None
        except PublishRefused as exc:
            raise _Refusal(403, str(exc)) from None
        except UnicodeError as exc:  # e.g. a lone surrogate (\ud800) in a string: cannot be UTF-8 encoded
            raise _Refusal(400, "a string of the record cannot be encoded as UTF-8 (an unpaired surrogate escape "
                           "such as \\ud800?); send valid Unicode text",
                           problems=[{"path": "", "problem": str(exc)}]) from None
        except (KafkaError, RegistryUnreachable) as exc:
            self.context.monitor.on_error(exc, stage="producer", event_type=event_type)
            raise _Refusal(503, f"the bus cannot take records now: {exc}", headers=self._retry_after()) from None

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.config.retry_after_s)}


# -- helpers ---------------------------------------------------------------------------------


def verify_token(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def _bind(host: str, port: int) -> socket.socket:
    return bind(host, port, what="http ingest connector (set another `port` in its config)", error=ConnectorError)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _remote(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _traceparent(request: Request) -> str | None:
    """The incoming W3C trace context, if well formed (else a new trace is started)."""
    value = request.headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) and not value.startswith("ff") else None


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise _Refusal(400, f"Content-Length {declared!r} is not a number") from None
    if size > limit:
        raise _Refusal(413, f"the body is {size:,} bytes, over the {limit:,}-byte limit; split it")


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as more than ``limit`` bytes arrived (whatever Content-Length said)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refusal(413, f"the body is over the {limit:,}-byte limit; split it")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> Any:
    """One JSON record, or 400 saying what is wrong with the bytes."""
    try:
        record = parse_record(body)
        if b"\\u" in body:  # only a \u escape can make a lone surrogate (\ud800), which cannot be stored
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        return record
    except InputInvalid as exc:
        problem = str(exc)
    except RecursionError:
        problem = "the JSON is nested too deeply; records are at most a few levels deep"
    except UnicodeEncodeError:
        problem = "a string holds an unpaired surrogate escape (such as \\ud800), which is not Unicode text; send valid text"
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        problem = f"invalid JSON: {exc}"
    raise _Refusal(400, problem, problems=[{"path": "", "problem": problem}])


def _problem(problem: FieldProblem) -> dict[str, str]:
    return {"path": problem.path, "problem": problem.problem}
