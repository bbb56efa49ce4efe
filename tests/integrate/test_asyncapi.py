"""`bus asyncapi`: the document is valid against the official AsyncAPI 3.0.0 JSON schema and
says what the topology says.

``asyncapi-3.0.0.schema.json`` is ``schemas/3.0.0.json`` of the npm package
``@asyncapi/specs`` 6.11.1 (Apache-2.0), the schema the official parser validates with: no
PyPI package ships it. It also checks each Avro payload against AsyncAPI's Avro meta-schema.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest
from ruamel.yaml import YAML

from bus.integrate.asyncapi import AVRO_FORMAT, asyncapi_document, split_names
from bus.integrate.desired import desired_state
from bus.kafka.config import KafkaSettings
from tests.fixtures.city import REPO
from bus.topology.validate import load_topology

SCHEMA = json.loads((Path(__file__).with_name("asyncapi-3.0.0.schema.json")).read_text(encoding="utf-8"))
SETTINGS = KafkaSettings(bootstrap_servers="kafka-1.city.local:9092,kafka-2.city.local:9092",
                         registry_url="https://registry.city.local")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(load_topology(REPO / "topology.yaml"), SETTINGS)


VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in VALIDATOR.iter_errors(doc)]


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert errors(json.loads(json.dumps(document))) == []


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("info"),
    lambda d: d["operations"][next(iter(d["operations"]))].update(action="publish"),  # AsyncAPI 2 verb
    lambda d: d["channels"][next(iter(d["channels"]))]["bindings"]["kafka"].update(partitions="six"),
    lambda d: d["components"]["messages"]["camera_alarm"]["payload"]["schema"].update(name="city.CameraAlarm"),
])
def test_the_validator_catches_broken_documents(document: dict[str, Any], breakage: Any) -> None:
    broken = copy.deepcopy(document)
    breakage(broken)
    assert not VALIDATOR.is_valid(broken)


def test_channels_operations_and_messages_follow_the_topology(document: dict[str, Any]) -> None:
    topology = load_topology(REPO / "topology.yaml")
    desired = desired_state(topology, registry_topic=None)
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {t.name for t in desired.topics if t.purpose in ("canonical", "enriched", "subscription")}
    sends = {(o["tags"][0]["name"], o["channel"]["$ref"]) for o in document["operations"].values() if o["action"] == "send"}
    assert sends == {(et.owner, f"#/channels/{et.name}") for et in topology.event_types}
    receives = [o for o in document["operations"].values() if o["action"] == "receive"]
    assert len(receives) == len(topology.subscriptions)
    for op in document["operations"].values():  # every $ref resolves
        channel = document["channels"][op["channel"]["$ref"].split("/")[-1]]
        for ref in op["messages"]:
            _, _, channel_id, _, message_id = ref["$ref"].split("/")
            assert document["channels"][channel_id] is channel and message_id in channel["messages"]
            assert message_id in document["components"]["messages"]
    fire = document["operations"]["fire_brigade.receive.fire-alarms"]
    assert fire["bindings"]["kafka"]["groupId"]["enum"] == ["bus-connector-fire-dispatch-webhook"]
    assert document["servers"]["kafka-2"]["host"] == "kafka-2.city.local:9092"
    assert document["servers"]["kafka-1"]["bindings"]["kafka"]["schemaRegistryUrl"] == "https://registry.city.local"


def test_each_message_carries_the_schema_the_registry_gets(document: dict[str, Any]) -> None:
    topology = load_topology(REPO / "topology.yaml")
    registered = {s.topic: json.loads(s.schema) for s in desired_state(topology, registry_topic=None).subjects}
    for channel in document["channels"].values():
        (ref,) = channel["messages"].values()
        message = document["components"]["messages"][ref["$ref"].split("/")[-1]]
        assert message["payload"]["schemaFormat"] == AVRO_FORMAT
        ours = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(message["payload"]["schema"]))
        theirs = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(registered[channel["address"]]))
        assert ours == theirs, channel["address"]
        assert message["headers"]["properties"]["ce_type"]["const"] == message["name"]
    masked = document["components"]["messages"]["statistics.population-statistics"]["payload"]["schema"]
    assert "national_id" not in {f["name"] for f in masked["fields"]}  # statistics: national_id dropped


def test_split_names_keeps_full_names() -> None:
    schema = {"type": "record", "name": "a.b.R", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "c.E", "symbols": ["X"]}},
        {"name": "n", "type": ["null", {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}]},
        {"name": "again", "type": "c.E"},
    ]}
    split = split_names(schema)
    assert (split["namespace"], split["name"]) == ("a.b", "R")
    assert (split["fields"][0]["type"]["namespace"], split["fields"][0]["type"]["name"]) == ("c", "E")
    assert split["fields"][1]["type"][1]["name"] == "Inner" and "namespace" not in split["fields"][1]["type"][1]
    assert (fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(split))
            == fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)))


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_cli_writes_yaml_or_json(document: dict[str, Any], tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"city.{fmt}"
    done = subprocess.run(
        [sys.executable, "-c", "import bus.cli.integrate; from bus.cli.app import main; main()",
         "asyncapi", "--topology", str(REPO / "topology.yaml"), "--format", fmt, "--output", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    doc = json.loads(text) if fmt == "json" else YAML(typ="safe").load(text)
    local = json.loads(json.dumps(document))
    local["servers"] = doc["servers"]  # the command's come from its own (default) settings
    assert doc == local


def test_cli_refuses_an_unknown_format() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import bus.cli.integrate; from bus.cli.app import main; main()",
         "asyncapi", "--topology", str(REPO / "topology.yaml"), "--format", "xml"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 2 and "write yaml or json" in done.stderr
