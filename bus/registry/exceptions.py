"""Errors of the embedded schema registry and of the client helpers.

Each registry error carries Confluent's ``error_code`` and HTTP status, so that the REST
layer answers exactly what a Confluent Schema Registry would and confluent-kafka's
``SchemaRegistryClient`` raises its usual ``SchemaRegistryError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bus.errors import BusError

if TYPE_CHECKING:
    from bus.schemas.compat import Incompatibility


class RegistryError(BusError):
    """Anything the registry reports; ``error_code`` and ``http_status`` are Confluent's."""

    error_code: int = 50001
    http_status: int = 500


class SubjectNotFound(RegistryError):
    error_code, http_status = 40401, 404

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"Subject '{subject}' not found.")


class VersionNotFound(RegistryError):
    error_code, http_status = 40402, 404

    def __init__(self, subject: str, version: int | str) -> None:
        self.subject = subject
        self.version = version
        super().__init__(f"Version {version} not found for subject '{subject}'.")


class SchemaNotFound(RegistryError):
    error_code, http_status = 40403, 404


class SubjectSoftDeleted(RegistryError):
    error_code, http_status = 40404, 404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete it permanently."
        )


class SubjectNotSoftDeleted(RegistryError):
    error_code, http_status = 40405, 404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was not deleted first before being permanently deleted: "
            "delete it without permanent=true first."
        )


class VersionSoftDeleted(RegistryError):
    error_code, http_status = 40406, 404

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Version {version} of subject '{subject}' was soft deleted. Set permanent=true to "
            "delete it permanently."
        )


class VersionNotSoftDeleted(RegistryError):
    error_code, http_status = 40407, 404

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Version {version} of subject '{subject}' was not deleted first before being "
            "permanently deleted: delete it without permanent=true first."
        )


class InvalidSchemaError(RegistryError):
    """42201: the schema cannot be parsed, or is of a type this registry does not serve."""

    error_code, http_status = 42201, 422


class InvalidVersion(RegistryError):
    error_code, http_status = 42202, 422

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(
            f"The specified version '{version}' is not a valid version id. Allowed values are "
            'between [1, 2^31-1] and the string "latest".'
        )


class InvalidCompatibilityLevel(RegistryError):
    error_code, http_status = 42203, 422


class IncompatibleSchema(RegistryError):
    """409: the schema breaks the subject's compatibility mode. Keeps every reason."""

    error_code, http_status = 409, 409

    def __init__(self, subject: str, mode: str, incompatibilities: Sequence["Incompatibility"]) -> None:
        self.subject = subject
        self.mode = mode
        self.incompatibilities = list(incompatibilities)
        reasons = "; ".join(i.message for i in self.incompatibilities)
        super().__init__(
            f"Schema being registered is incompatible with an earlier schema for subject "
            f'"{subject}" (compatibility {mode}): {reasons}'
        )


class BadRequest(RegistryError):
    """A request body that is not the JSON object the endpoint expects."""

    error_code, http_status = 400, 400


class RegistryStorageError(RegistryError):
    """50001: the registry's Kafka topic could not be read or written."""

    error_code, http_status = 50001, 500


class RegistryStartError(RegistryError):
    """The embedded registry could not start (broker unreachable, port in use...)."""


class RegistryUnreachable(BusError):
    """No schema registry answered at the configured URL (client side)."""

    def __init__(self, url: str, waited_s: float | None, detail: str = "") -> None:
        self.url = url
        self.waited_s = waited_s
        within = f" within {waited_s:g} s" if waited_s is not None else ""
        super().__init__(
            f"no schema registry answered at {url}{within}{': ' + detail if detail else ''}. "
            "Start the embedded one with `bus registry` (or everything with `bus up`), or set "
            "BUS_REGISTRY_URL to a running Confluent-compatible registry."
        )
