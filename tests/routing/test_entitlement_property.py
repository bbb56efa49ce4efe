"""Property: whatever the entitlements and subscription rules, a department never receives
a personal field it is not entitled to, and never one less masked than its rule allows.

The expectation is computed here from the rules themselves, independently of the
topology's own treatment logic; the checked output is the router's projection."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from bus.demo.samples import population_change
from bus.routing.plan import build_route
from bus.schemas.catalog import SchemaCatalog
from bus.topology.validate import check_topology

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EVENT = SchemaCatalog.load(SCHEMAS).get("population_change")
PERSONAL = {f.path: f for f in EVENT.personal_fields()}
PLAIN = [f["name"] for f in EVENT.schema["fields"] if f["name"] not in PERSONAL]
LEVEL = {"drop": 0, "hash": 1, "partial": 2, "generalise": 2, "clear": 3}
TREATMENTS = ["clear", "masked", "hash", "partial", "generalise", "drop"]


def concrete(treatment: str, field: str) -> str:
    return PERSONAL[field].mask if treatment == "masked" else treatment  # type: ignore[return-value]


@st.composite
def rules(draw: st.DrawFn) -> tuple[dict, list | None, dict]:
    entitled = draw(st.dictionaries(st.sampled_from(sorted(PERSONAL)), st.sampled_from(TREATMENTS)))
    visible = [f for f, t in entitled.items() if concrete(t, f) != "drop"]
    fields = None
    if draw(st.booleans()):
        fields = draw(st.lists(st.sampled_from(PLAIN + visible), unique=True, min_size=1))
        if "person_id" in visible and "person_id" not in fields:
            fields.append("person_id")
    chosen = fields if fields is not None else visible
    masks = {}
    for f in [f for f in chosen if f in entitled]:
        ceiling = concrete(entitled[f], f)
        narrower = [t for t in ("drop", "hash", "partial", "generalise") if t == ceiling or LEVEL[t] < LEVEL[ceiling]]
        if narrower and draw(st.booleans()):
            masks[f] = draw(st.sampled_from(narrower))
    return entitled, fields, masks


def write_topology(tmp: Path, entitled: dict, fields: list | None, masks: dict) -> Path:
    sub = {"name": "probe", "department": "statistics", "event_type": "population_change", "description": "Probe."}
    if fields is not None:
        sub["fields"] = fields
    if masks:
        sub["masks"] = masks
    doc = {
        "version": 1,
        "city": {"name": "Probe"},
        "schemas_dir": str(SCHEMAS),
        "departments": [
            {"name": "civil_affairs", "title": "Civil Affairs"},
            {"name": "statistics", "title": "Statistics", "entitlements": {"population_change": entitled} if entitled else {}},
        ],
        "event_types": [{"name": "population_change", "schema": "population/population_change.avsc",
                         "owner": "civil_affairs", "key": "person_id"}],
        "subscriptions": [sub],
    }
    path = tmp / "topology.yaml"
    with path.open("w") as out:
        YAML().dump(doc, out)
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(rule=rules(), seed=st.integers(0, 2**32))
def test_no_personal_field_beyond_its_entitlement(tmp_path: Path, rule: tuple, seed: int) -> None:
    entitled, fields, masks = rule
    topology, problems = check_topology(write_topology(tmp_path, entitled, fields, masks))
    assume(topology is not None and not problems)
    route = build_route(topology, topology.subscription("probe"), {"BUS_HASH_MASTER_KEY": "k"})
    record = population_change(random.Random(seed))
    from bus.schemas.records import to_datum

    datum = to_datum(EVENT, record)
    out = route.project(datum)
    for name, info in PERSONAL.items():
        if name not in entitled:
            assert name not in out, f"{name} delivered without entitlement"
            continue
        ceiling = concrete(entitled[name], name)
        given_ = masks.get(name, ceiling)
        assert LEVEL[given_] <= LEVEL[ceiling]
        if given_ == "drop":
            assert name not in out
            continue
        if name not in out:
            continue  # not selected
        original, delivered = datum[name], out[name]
        if original is None:
            assert delivered is None
        elif given_ == "clear":
            assert delivered == original
        elif given_ == "hash":
            assert isinstance(delivered, str) and delivered.startswith("h:") and str(original) not in delivered
        elif given_ == "partial":
            assert isinstance(delivered, str) and "*" in delivered and delivered != str(original)
        elif given_ == "generalise":
            assert delivered != original and (delivered is None or str(original) not in delivered or len(str(original)) <= 4)
    assert set(out) <= set(PLAIN) | set(entitled)
