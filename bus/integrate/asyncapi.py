"""``bus asyncapi``: the topology as an AsyncAPI 3.0.0 document.

- one channel per topic: each event type's canonical topic and each subscription's topic,
  with Kafka channel bindings (topic, partitions, cleanup policy);
- operations: ``send`` for the department that owns (publishes) an event type, ``receive``
  for each subscription (with the sink connector's consumer group when one delivers it);
- messages: the Avro schema as a multi-format schema (``application/vnd.apache.avro+json;
  version=1.9.0``): the canonical schema, or the subscription's derived one (the schema the
  router registers: selected fields, masked fields as optional strings). A subscription
  that passes records through untouched reuses the canonical message. Headers are the
  CloudEvents Kafka binding's (``ce_*``, ``content-type``); values use the Confluent wire
  format (schema id in the payload), the key is the event type's key field as a string;
- servers: every bootstrap server, with the schema registry's URL in its Kafka binding.
"""

from __future__ import annotations

import io
import json
from typing import Any, Literal

from ruamel.yaml import YAML

from bus import __version__
from bus.integrate.desired import DesiredTopic, desired_state
from bus.kafka.config import KafkaSettings
from bus.publish.publisher import CONTENT_TYPE, SPEC_VERSION
from bus.topology.models import Topology
from bus.topology.names import connector_group

ASYNCAPI_VERSION = "3.0.0"
AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING = "0.5.0"
Format = Literal["yaml", "json"]


def cloudevents_headers(event_type: str | None = None) -> dict[str, Any]:
    """The headers every record carries (CloudEvents 1.0, Kafka protocol binding, binary mode)."""
    ce_type: dict[str, Any] = {"type": "string", "description": "The event type (the topology's name for it)."}
    if event_type is not None:
        ce_type["const"] = event_type
    return {
        "type": "object",
        "description": "CloudEvents 1.0 attributes in binary mode (Kafka protocol binding): every attribute but "
                       "the data is a header prefixed ce_; values are UTF-8.",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"],
        "properties": {
            "ce_specversion": {"type": "string", "const": SPEC_VERSION},
            "ce_id": {"type": "string", "description": "Unique id of the event (a UUID); a replay keeps it."},
            "ce_source": {"type": "string", "description": "The publishing department."},
            "ce_type": ce_type,
            "ce_time": {"type": "string", "format": "date-time", "description": "When it was published (RFC 3339)."},
            "ce_subject": {"type": "string", "description": "The record key (the event type's key field)."},
            "ce_traceparent": {"type": "string", "description": "W3C trace context of the publication."},
            "content-type": {"type": "string", "const": CONTENT_TYPE},
        },
    }


def asyncapi_document(topology: Topology, settings: KafkaSettings) -> dict[str, Any]:
    """The document as plain data (dump it with :func:`render`)."""
    desired = desired_state(topology, registry_topic=None)
    topics = {t.name: t for t in desired.topics}
    schemas = {s.topic: json.loads(s.schema) for s in desired.subjects}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for et in topology.event_types:
        messages[et.name] = _message(et.name, f"{et.name} (canonical)", et.description, schemas[et.topic],
                                     et.key, et.subject)
        channels[et.name] = _channel(topics[et.topic], f"Every {et.name} event, as published by {et.owner}.",
                                     et.name)
        operations[f"{et.owner}.publish.{et.name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{et.name}"},
            "title": f"{topology.department(et.owner).title} publishes {et.name}",
            "summary": f"The only department that may publish {et.name}.",
            "tags": [{"name": et.owner}],
            "messages": [{"$ref": f"#/channels/{et.name}/messages/{et.name}"}],
        }
        if et.routed_topic != et.topic:
            channels[f"{et.name}.enriched"] = _channel(
                topics[et.routed_topic], f"{et.name} as the processors enrich it; subscribers are routed from here.",
                et.name)
    for sub in topology.subscriptions:
        et = topology.event_type(sub.event_type)
        channel_id = f"{sub.department}.{sub.name}"
        if schemas[sub.topic] == schemas[et.topic]:
            message_id = et.name  # untouched: the canonical records, byte for byte
        else:
            message_id = channel_id
            messages[message_id] = _message(et.name, f"{et.name} for {sub.department} ({sub.name})",
                                            sub.description, schemas[sub.topic], et.key, sub.subject)
        channels[channel_id] = _channel(topics[sub.topic], sub.description, message_id)
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"{topology.department(sub.department).title} receives {sub.name}",
            "summary": sub.description,
            "tags": [{"name": sub.department}],
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
        }
        sinks = [c for c in topology.connectors if c.subscription == sub.name]
        if sinks:
            operation["bindings"] = {"kafka": {
                "groupId": {"type": "string", "enum": [connector_group(topology.namespace, c.name) for c in sinks]},
                "bindingVersion": KAFKA_BINDING,
            }}
        operations[f"{sub.department}.receive.{sub.name}"] = operation

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{topology.city.name} city data bus",
            "version": __version__,
            "description": (topology.city.description or "") + "\n\nGenerated by `bus asyncapi` from the topology: "
                           "departments publish typed events once to canonical topics; the router delivers each "
                           "subscription, filtered and masked, on its own topic.",
        },
        "servers": _servers(settings),
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"CloudEventsHeaders": cloudevents_headers()}},
    }


def _servers(settings: KafkaSettings) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    hosts = [h.strip() for h in settings.bootstrap_servers.split(",") if h.strip()]
    for i, host in enumerate(hosts, start=1):
        servers[f"kafka-{i}" if len(hosts) > 1 else "kafka"] = {
            "host": host,
            "protocol": "kafka-secure" if settings.security_protocol != "PLAINTEXT" else "kafka",
            "description": "Bootstrap server of the bus's Kafka cluster.",
            "bindings": {"kafka": {"schemaRegistryUrl": settings.registry_url, "schemaRegistryVendor": "confluent",
                                   "bindingVersion": KAFKA_BINDING}},
        }
    return servers


def _channel(topic: DesiredTopic, description: str | None, message_id: str) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": topic.name,
        "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        "bindings": {"kafka": {
            "topic": topic.name,
            "partitions": topic.partitions,
            "topicConfiguration": {"cleanup.policy": [topic.config["cleanup.policy"]]},
            "bindingVersion": KAFKA_BINDING,
        }},
    }
    if description:
        channel["description"] = description
    return channel


def _message(event_type: str, title: str, description: str | None, schema: dict[str, Any], key: str,
             subject: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": event_type,
        "title": title,
        "contentType": CONTENT_TYPE,
        "headers": cloudevents_headers(event_type),
        "payload": {"schemaFormat": AVRO_FORMAT, "schema": split_names(schema)},
        "bindings": {"kafka": {
            "key": {"type": "string", "description": f"The {key} field of the record."},
            "schemaIdLocation": "payload",
            "schemaIdPayloadEncoding": "confluent",
            "schemaLookupStrategy": "TopicNameStrategy",
            "bindingVersion": KAFKA_BINDING,
        }},
        "x-registry-subject": subject,
    }
    if description:
        message["description"] = description
    return message


def split_names(node: Any) -> Any:
    """The same Avro schema with every dotted ``name`` written as ``namespace`` + ``name``.

    Avro allows a full name in ``name``; AsyncAPI's Avro meta-schema wants a simple name
    and the namespace apart. The full names, and so the schema, are unchanged."""
    if isinstance(node, list):
        return [split_names(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: split_names(v) if k in ("type", "fields", "items", "values") else v for k, v in node.items()}
    name = node.get("name")
    if node.get("type") in ("record", "enum", "fixed") and isinstance(name, str) and "." in name:
        out["namespace"], out["name"] = name.rsplit(".", 1)
    return out


def render(document: dict[str, Any], fmt: Format = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
