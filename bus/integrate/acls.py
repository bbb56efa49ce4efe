"""Kafka ACLs: reading the bindings a cluster holds, creating and deleting ours, and
finding out whether the broker supports ACLs at all.

Support is judged from the broker's own answers, never from its name:

- DescribeAcls answered ``SECURITY_DISABLED`` (Kafka without an authorizer) or an
  unsupported API: not supported.
- DescribeAcls answered, but some of our bindings are missing: a CreateAcls probe decides.
  The probe sends one binding every authorizer must refuse (a principal without the
  ``Type:`` prefix, which Kafka rejects with INVALID_REQUEST and never stores) from a child
  process. The embedded broker (tansu 0.6) advertises CreateAcls but answers it with an
  empty body, on which librdkafka 2.16 aborts the whole process (``Assertion `rko_result'
  failed``); in a child that abort is an answer ("not supported") instead of the end of
  ``bus plan``.
- The probe refused with an authorization error: the broker has an authorizer, but this
  client may not manage ACLs (``denied``). Kafka's StandardAuthorizer answers such a
  client's DescribeAcls with no bindings rather than an error, so what it read proves
  nothing either: the plan stops with an error instead of listing every binding as missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, get_args

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding as KafkaAclBinding,
)
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from bus.integrate.desired import AclBinding, AclOperationName
from bus.kafka.config import KafkaSettings

#: A principal no authorizer accepts (no ``Type:`` prefix): the probe creates nothing.
PROBE_PRINCIPAL = "bus-acl-probe-not-a-principal"
PROBE_TOPIC = "bus-acl-probe"
_UNSUPPORTED = {"SECURITY_DISABLED", "_UNSUPPORTED_FEATURE", "UNSUPPORTED_VERSION"}
_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "transactional_id": ResourceType.TRANSACTIONAL_ID}


@dataclass(frozen=True)
class AclSupport:
    supported: bool
    reason: str = ""
    denied: bool = False  # the broker has ACLs, this client may not manage them


def to_kafka(binding: AclBinding) -> KafkaAclBinding:
    return KafkaAclBinding(
        _RESOURCE[binding.resource], binding.name,
        ResourcePatternType.PREFIXED if binding.prefixed else ResourcePatternType.LITERAL,
        binding.principal, "*", AclOperation[binding.operation], AclPermissionType.ALLOW,
    )


def to_filter(binding: AclBinding) -> AclBindingFilter:
    """The filter that matches exactly ``binding`` (for deleting it)."""
    exact = to_kafka(binding)
    return AclBindingFilter(exact.restype, exact.name, exact.resource_pattern_type, exact.principal, exact.host,
                            exact.operation, exact.permission_type)


def from_kafka(binding: KafkaAclBinding) -> AclBinding | None:
    """Our form of an ALLOW, any-host binding on a topic, group or transactional id
    (anything else is not the bus's to manage: None)."""
    kinds = {v: k for k, v in _RESOURCE.items()}
    if (binding.permission_type != AclPermissionType.ALLOW or binding.host != "*"
            or binding.restype not in kinds or not isinstance(binding.operation, AclOperation)
            or binding.operation.name not in get_args(AclOperationName)
            or binding.resource_pattern_type not in (ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED)):
        return None
    return AclBinding(binding.principal, kinds[binding.restype], binding.name, binding.operation.name,  # type: ignore[arg-type]
                      binding.resource_pattern_type == ResourcePatternType.PREFIXED)


def read_acls(client: AdminClient, timeout_s: float) -> tuple[set[AclBinding] | None, AclSupport]:
    """Every binding on the cluster in our form, or None with the reason ACLs are unsupported."""
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
                                  AclOperation.ANY, AclPermissionType.ANY)
    try:
        found = client.describe_acls(everything, request_timeout=timeout_s).result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() in _UNSUPPORTED:
            return None, AclSupport(False, f"DescribeAcls answered {error.name()}: {error.str()}")
        raise
    return {b for b in (from_kafka(k) for k in found) if b is not None}, AclSupport(True)


def probe_create_support(settings: KafkaSettings, timeout_s: float = 30.0) -> AclSupport:
    """Whether the broker answers CreateAcls, asked from a child process (module docstring)."""
    env = {**os.environ, **settings_environ(settings)}
    try:
        done = subprocess.run([sys.executable, "-m", "bus.integrate.acl_probe"], env=env, capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return AclSupport(False, f"CreateAcls got no answer within {timeout_s:g} s")
    if done.returncode < 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        detail = next((line.split(": ", 2)[-1] for line in lines if "PROTOERR" in line), lines[-1] if lines else "")
        return AclSupport(False, f"the Kafka client could not read the broker's answer to CreateAcls and stopped "
                                 f"({signal.Signals(-done.returncode).name}){': ' + detail if detail else ''}")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return AclSupport(False, f"the CreateAcls probe failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return AclSupport(bool(answer["supported"]), str(answer["reason"]), bool(answer.get("denied", False)))


def probe_in_this_process(client: AdminClient, timeout_s: float = 10.0) -> dict[str, Any]:
    """The probe itself (run by ``bus.integrate.acl_probe`` in the child)."""
    binding = KafkaAclBinding(ResourceType.TOPIC, PROBE_TOPIC, ResourcePatternType.LITERAL, PROBE_PRINCIPAL, "*",
                              AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    future = client.create_acls([binding], request_timeout=timeout_s)[binding]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() in _UNSUPPORTED:
            return {"supported": False, "reason": f"CreateAcls answered {error.name()}: {error.str()}"}
        if "AUTHORIZATION_FAILED" in error.name():
            return {"supported": False, "denied": True, "reason": f"this client may not create ACLs ({error.name()})"}
        return {"supported": True, "reason": f"CreateAcls refused the probe binding as it should ({error.name()})"}
    # An authorizer that stored it anyway: take it back.
    client.delete_acls([AclBindingFilter(ResourceType.TOPIC, PROBE_TOPIC, ResourcePatternType.LITERAL, PROBE_PRINCIPAL,
                                         "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)], request_timeout=timeout_s)
    return {"supported": True, "reason": "CreateAcls accepted the probe binding (deleted again)"}


def settings_environ(settings: KafkaSettings) -> dict[str, str]:
    """``BUS_*`` variables from which a child's ``KafkaSettings()`` rebuilds ``settings``."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"BUS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
