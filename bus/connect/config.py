"""The configuration every connector's config extends, and secret references.

A connector declares its settings once, as a pydantic model that extends
:class:`ConnectorConfig`: the same model checks the ``config`` of its entries in
``topology.yaml`` (:func:`config_problems`, called by ``bus validate``), generates
``bus connector config TYPE`` and documents the connector.

Secrets are never written in clear in ``topology.yaml``: a secret field holds a
reference, ``env:NAME`` (an environment variable) or ``file:PATH`` (a file holding only
the secret), resolved when the connector starts (:func:`resolve_secrets`). Their values
never appear in a repr, a log line or an error message.

Kafka Connect's error-handling settings are fields of every config, under their Connect
names (``errors.tolerance``, ``errors.retry.timeout``...).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, SecretStr, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from bus.topology.loader import describe_value
from bus.connect.exceptions import ConnectorConfigInvalid, Loc, SecretUnavailable
from bus.retry import RetryPolicy

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOPIC_NAME = r"^[A-Za-z0-9._-]+$"


class SecretRef:
    """A secret named by reference: ``env:NAME`` or ``file:PATH``.

    ``get_secret_value()`` reads it (once; the value is kept in memory). Programs may
    also pass a :class:`pydantic.SecretStr` directly; topology files may not.
    """

    __slots__ = ("ref", "_value")

    def __init__(self, ref: str, value: SecretStr | None = None) -> None:
        self.ref = ref
        self._value = value

    @classmethod
    def parse(cls, text: str) -> "SecretRef":
        kind, _, target = text.partition(":")
        if kind == "env" and _ENV_NAME.match(target):
            return cls(text)
        if kind == "file" and target.strip():
            return cls(text)
        raise PydanticCustomError(
            "secret_reference",
            "a secret is never written in clear in topology.yaml; write env:NAME (an environment variable "
            "that holds it) or file:PATH (a file that holds only the secret), e.g. env:SKYNET_INGEST_TOKEN",
        )

    @property
    def resolved(self) -> bool:
        return self._value is not None

    def resolve(self) -> SecretStr:
        """Read the secret now; SecretUnavailable says what to set when it cannot be read."""
        if self._value is not None:
            return self._value
        kind, _, target = self.ref.partition(":")
        if kind == "env":
            value = os.environ.get(target)
            if value is None:
                raise SecretUnavailable(
                    f"secret {self.ref}: the environment variable {target} is not set; set it in the "
                    "connector's environment before starting it"
                )
        else:
            value = _read_secret_file(Path(target), self.ref)
        if not value:
            raise SecretUnavailable(f"secret {self.ref} is empty; put the secret there")
        self._value = SecretStr(value)
        return self._value

    def get_secret_value(self) -> str:
        return self.resolve().get_secret_value()

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    # -- pydantic ----------------------------------------------------------------------

    @classmethod
    def _validate(cls, value: Any) -> "SecretRef":
        if isinstance(value, SecretRef):
            return value
        if isinstance(value, SecretStr):
            return cls("<given in code>", value)
        if isinstance(value, str):
            return cls.parse(value)
        raise PydanticCustomError(
            "secret_reference", "a secret reference is a string: env:NAME or file:PATH, e.g. env:SKYNET_INGEST_TOKEN"
        )

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.ref)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$", "format": "secret-reference"}


def _read_secret_file(path: Path, ref: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretUnavailable(f"secret {ref}: no file {path}; create it with only the secret in it") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SecretUnavailable(f"secret {ref}: cannot read {path} ({reason}); check its permissions") from None
    return text.rstrip("\r\n")


# -- the base config ---------------------------------------------------------------------


class ConnectorConfig(BaseModel):
    """Settings every connector has: Kafka Connect's error handling."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    errors_tolerance: Literal["none", "all"] = Field(
        "all",
        alias="errors.tolerance",
        description="What a record that fails after its retries does: `all` = it goes to the dead-letter topic "
        "and the connector goes on; `none` = the connector stops with the error (Kafka Connect's default; "
        "the bus's is `all`, because bad data must never stop the bus).",
        examples=["all", "none"],
    )
    errors_retry_timeout: int = Field(
        300_000,
        ge=-1,
        alias="errors.retry.timeout",
        description="Milliseconds to keep retrying a failing operation (0 = no retry, -1 = forever).",
        examples=[300000, 0, -1],
    )
    errors_retry_delay_max_ms: int = Field(
        60_000,
        ge=0,
        alias="errors.retry.delay.max.ms",
        description="Longest wait between retries, in milliseconds; waits start near 300 ms and double.",
        examples=[60000],
    )
    errors_log_enable: bool = Field(
        False,
        alias="errors.log.enable",
        description="Log every failed record (topic, partition, offset, error).",
        examples=[True],
    )
    errors_log_include_messages: bool = Field(
        False,
        alias="errors.log.include.messages",
        description="With errors.log.enable: also log the failed record's key and headers (never its value).",
        examples=[True],
    )
    errors_deadletterqueue_topic_name: str | None = Field(
        None,
        pattern=TOPIC_NAME,
        alias="errors.deadletterqueue.topic.name",
        description="Dead-letter topic of this connector. Default: `bus-dlq-<connector name>` (under the "
        "topology's namespace).",
        examples=["bus-dlq-fire-dispatch-webhook"],
    )
    errors_deadletterqueue_context_headers_enable: bool = Field(
        True,
        alias="errors.deadletterqueue.context.headers.enable",
        description="Add the `__connect.errors.*` headers (original topic, partition, offset, connector, "
        "exception) to dead letters (Kafka Connect's default is false; the bus's is true).",
        examples=[True],
    )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.from_kafka_connect(self.errors_retry_timeout, self.errors_retry_delay_max_ms)


# -- parsing and validation ----------------------------------------------------------------


def parse_config(
    model: type[ConnectorConfig], connector: str, config: Mapping[str, Any], *, resolve: bool = True
) -> ConnectorConfig:
    """``config`` validated as ``model``; with ``resolve`` every secret is read now.
    Raises :class:`ConnectorConfigInvalid` listing every problem."""
    try:
        parsed = model.model_validate(dict(config))
    except ValidationError as exc:
        raise ConnectorConfigInvalid(connector, model_problems(model, exc)) from exc
    if resolve:
        problems = resolve_secrets(parsed)
        if problems:
            raise ConnectorConfigInvalid(connector, problems)
    return parsed


def resolve_secrets(config: BaseModel) -> list[tuple[Loc, str]]:
    """Read every secret of ``config``; the problems of those that cannot be read."""
    problems: list[tuple[Loc, str]] = []
    for loc, secret in iter_secrets(config):
        try:
            secret.resolve()
        except SecretUnavailable as exc:
            problems.append((loc, str(exc)))
    return problems


def iter_secrets(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, SecretRef]]:
    """Every SecretRef inside a model (nested models, lists and dicts), with its location."""
    if isinstance(value, SecretRef):
        yield loc, value
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from iter_secrets(getattr(value, name), (*loc, info.alias or name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_secrets(item, (*loc, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from iter_secrets(item, (*loc, i))


def model_problems(model: type[BaseModel], exc: ValidationError) -> list[tuple[Loc, str]]:
    """pydantic's errors as (loc, message) that say what to write instead."""
    return [_problem(model, err) for err in exc.errors()]


def _problem(model: type[BaseModel], err: ErrorDetails) -> tuple[Loc, str]:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = _keys(owner) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = f"; the keys allowed here are: {', '.join(allowed)}" if allowed else "; remove it"
        return loc, f"unknown key {loc[-1]!r}{hint}{listed}"
    if kind == "missing":
        info = _field_at(model, loc)
        if info is None:
            return loc, f"missing required key {loc[-1]!r}"
        example = f"`{loc[-1]}: {info.examples[0]}`" if info.examples else f"`{loc[-1]}: ...`"
        what = (info.description or "").split(". ")[0].rstrip(".")
        return loc, f"missing required key {loc[-1]!r}: add {example}{' (' + what[:1].lower() + what[1:] + ')' if what else ''}"
    label = _label(loc)
    if kind == "literal_error":
        info = _field_at(model, loc)
        allowed = [str(a) for a in get_args(info.annotation) if a is not None] if info else []
        close = difflib.get_close_matches(str(err["input"]), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        listed = ", ".join(allowed) or err.get("ctx", {}).get("expected", "")
        return loc, f"{label}: {err['input']!r} is not allowed{hint}; write one of: {listed}"
    if _is_custom(kind):
        return loc, f"{label}: {err['msg']}"
    info = _field_at(model, loc)
    example = f"; write e.g. `{loc[-1]}: {info.examples[0]}`" if info and info.examples else ""
    message = err["msg"][:1].lower() + err["msg"][1:]
    return loc, f"{label}: {message}, got {describe_value(err['input'])}{example}"


#: Error types raised with PydanticCustomError by connector configs: their message is
#: already written for the user. A connector adds its own types here by naming them
#: ``connector_<something>``.
CUSTOM_ERRORS = {"secret_reference"}


def _is_custom(kind: str) -> bool:
    return kind in CUSTOM_ERRORS or kind.startswith("connector_")


def _label(loc: Loc) -> str:
    keys = [i for i, p in enumerate(loc) if isinstance(p, str)]
    if not keys:
        return "config"
    return str(loc[keys[-1]]) + "".join(f"[{p}]" for p in loc[keys[-1] + 1 :])


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        info = _named_field(current, part) if _is_model(current) else None
        if info is None:
            if isinstance(part, int) or not _is_model(current):
                continue  # list index or dict key: the item type is found below
            return None
        current = _model_in(info.annotation)
        if current is None:
            return None
    return current if _is_model(current) else None


def _field_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    owner = _model_at(model, loc[:-1])
    return _named_field(owner, loc[-1]) if owner and loc else None


def _named_field(model: type[BaseModel], part: str | int) -> Any:
    return next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _model_in(annotation: Any) -> Any:
    """The model type inside an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# -- help ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldHelp:
    key: str
    type: str
    required: bool
    default: Any
    description: str
    examples: list[Any]


def describe_config(model: type[BaseModel], prefix: str = "") -> list[FieldHelp]:
    """One line of help per key of ``model`` (nested models flattened with dots)."""
    out: list[FieldHelp] = []
    fields = list(model.model_fields.items())
    fields.sort(key=lambda item: item[0] in ConnectorConfig.model_fields)  # the connector's own first
    for name, info in fields:
        key = f"{prefix}{info.alias or name}"
        nested = _model_in(info.annotation)
        if nested is not None and _is_model(info.annotation) or (nested is not None and _optional_of(info.annotation, nested)):
            out.append(FieldHelp(key, "mapping", info.is_required(), None, info.description or "", []))
            out.extend(describe_config(nested, f"{key}."))
            continue
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append(
            FieldHelp(key, _type_name(info.annotation), info.is_required(), default, info.description or "",
                      list(info.examples or []))
        )
    return out


def _optional_of(annotation: Any, nested: Any) -> bool:
    args = getattr(annotation, "__args__", ()) or ()
    return nested in args and type(None) in args


_TYPE_NAMES = {str: "text", int: "whole number", float: "number", bool: "true or false"}


def _type_name(annotation: Any) -> str:
    args = [a for a in (getattr(annotation, "__args__", ()) or ()) if a is not type(None)]
    if annotation is SecretRef or SecretRef in args:
        return "secret (env:NAME | file:PATH)"
    if getattr(annotation, "__origin__", None) is Literal:
        return "one of " + ", ".join(str(a) for a in annotation.__args__)
    if len(args) == 1 and type(None) in annotation.__args__:
        return _type_name(args[0])
    return _TYPE_NAMES.get(annotation) or getattr(annotation, "__name__", None) or str(annotation)
