"""The ``linkage:`` section of topology.yaml: the shipped rules load, and every mistake in a
rule is reported at its line and column, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.topology import load_topology, validate_topology
from bus.topology.linkage import CAMERA_OWNER, DISTRICT_CENTRE

REPO = Path(__file__).resolve().parents[2]

HEAD = f"""\
version: 1
city: {{name: Testville}}
schemas_dir: {REPO / "schemas"}
departments:
  - {{name: police, title: Police}}
  - {{name: city_management, title: City management}}
  - {{name: fire_brigade, title: Fire brigade}}
event_types:
  - {{name: camera_alarm, schema: surveillance/camera_alarm.avsc, owner: police, key: camera_id}}
  - {{name: city_case, schema: city_management/city_case.avsc, owner: city_management, key: case_id}}
"""


def write(tmp_path: Path, linkage: str, head: str = HEAD) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(head + "linkage:\n" + textwrap.indent(textwrap.dedent(linkage), "  "), encoding="utf-8")
    return path


def problems(path: Path) -> list[tuple[int, int, str]]:
    return [(p.line, p.col, p.message) for p in validate_topology(path)]


def test_shipped_rules() -> None:
    topology = load_topology(REPO / "topology.yaml")
    rules = {r.name: r for r in topology.linkage}
    assert set(rules) == {"fire-smoke", "camera-maintenance"}
    assert rules["fire-smoke"].case.responsible == ["fire_brigade", DISTRICT_CENTRE]
    maintenance = rules["camera-maintenance"].case
    assert (maintenance.category, maintenance.responsible) == ("CAMERA_FAULT", [CAMERA_OWNER])
    assert (maintenance.respond_within_h, maintenance.resolve_within_h) == (24, 72)


def test_a_good_rule(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        - name: critical-fire
          match: {and: [{field: alarm_type, eq: FIRE_SMOKE}, {field: severity, in: [HIGH, CRITICAL]}]}
          case: {category: FIRE_HAZARD, responsible: [fire_brigade, district_centre, camera_owner], level: CITY,
                 respond_within_h: 0.25, resolve_within_h: 4}
        """)
    assert problems(path) == []
    (rule,) = load_topology(path).linkage
    assert rule.case.level == "CITY"


PLANTED = """\
- name: fire-smoke
  match: {field: alarm_type, eq: FIRE_SMOK}
  case:
    category: FIRE
    responsible: [fire_brigad, district_centre, district_centre]
    respond_within_h: 1
    resolve_within_h: 4
- name: fire-smoke
  match: {field: alarm_typ, in: [CAMERA_OFFLINE]}
  case: {category: CAMERA_FAULT, responsible: [camera_owner], respond_within_h: 24, resolve_within_h: 72}
"""


def test_names_categories_departments_and_match_fields(tmp_path: Path) -> None:
    found = problems(write(tmp_path, PLANTED))
    file = str(tmp_path / "topology.yaml")
    expected = [
        (13, 36, "'FIRE_SMOK' is not a symbol of AlarmType; did you mean 'FIRE_SMOKE'?"),
        (15, 17, "category 'FIRE' is not a city_case category; write one of the known CaseCategory symbols: "
                 "CAMERA_FAULT, FIRE_HAZARD"),
        (16, 21, "unknown department 'fire_brigad' in responsible; write a department, camera_owner or "
                 "district_centre: did you mean 'fire_brigade'?"),
        (16, 51, "'district_centre' is listed twice in responsible"),
        (19, 11, "duplicate linkage rule name 'fire-smoke' (rule 1 has it)"),
        (20, 20, "filter field 'alarm_typ' is not a field of camera_alarm; did you mean 'alarm_type'?"),
    ]
    assert len(found) == len(expected), found
    for (line, col, message), (want_line, want_col, fragment) in zip(found, expected, strict=True):
        assert (line, col) == (want_line, want_col) and fragment in message, (line, col, message)
    assert str(validate_topology(tmp_path / "topology.yaml")[0]).startswith(f"{file}:13:36: ")


@pytest.mark.parametrize(
    "rule,line,col,fragment",
    [
        ("- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, responsible: "
         "[fire_brigade], respond_within_h: 4, resolve_within_h: 1}}\n", 12, 65,
         "case: resolve_within_h (1) is shorter than respond_within_h (4)"),
        ("- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, responsible: [], "
         "respond_within_h: 1, resolve_within_h: 2}}\n", 12, 102, "responsible: the list is empty"),
        ("- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, responsible: "
         "[fire_brigade], respond_within_h: 0, resolve_within_h: 2}}\n", 12, 136, "respond_within_h: input should be greater than 0"),
        ("- {name: Fire Rule, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, "
         "responsible: [fire_brigade], respond_within_h: 1, resolve_within_h: 2}}\n", 12, 12, "'fire-rule'"),
        ("- {name: r, case: {category: FIRE_HAZARD, responsible: [fire_brigade], respond_within_h: 1, "
         "resolve_within_h: 2}}\n", 12, 5, "missing required key 'match'"),
        ("- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, responsible: "
         "[fire_brigade], respond_within_h: 1, resolve_within_h: 2, owner: police}}\n", 12, 160,
         "unknown key 'owner'; the keys allowed here are: category, responsible, level, respond_within_h"),
    ],
)
def test_structural_mistakes(tmp_path: Path, rule: str, line: int, col: int, fragment: str) -> None:
    found = problems(write(tmp_path, rule))
    assert len(found) == 1 and found[0][:2] == (line, col) and fragment in found[0][2], found


def test_linkage_needs_its_event_types(tmp_path: Path) -> None:
    head = HEAD.rsplit("  - {name: city_case", 1)[0]
    path = write(tmp_path, "- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, "
                           "responsible: [fire_brigade], respond_within_h: 1, resolve_within_h: 2}}\n", head)
    (found,) = problems(path)
    assert "event type 'city_case' is not defined" in found[2]


def test_mistakes_elsewhere_do_not_hide_linkage_mistakes(tmp_path: Path) -> None:
    head = HEAD.replace("owner: police, key: camera_id", "owner: police, key: camera_id, partitions: many")
    path = write(tmp_path, "- {name: r, match: {field: alarm_type, eq: FIRE_SMOKE}, case: {category: FIRE_HAZARD, "
                           "responsible: [fire_brigde], respond_within_h: 1, resolve_within_h: 2}}\n", head)
    messages = [m for _, _, m in problems(path)]
    assert any("partitions" in m for m in messages)
    assert any("unknown department 'fire_brigde'" in m for m in messages), messages
