"""Topology files that must be refused, each problem at its line and column, all at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus.connect.registry import KIT_CHECKS
from bus.topology import Problem, TopologyInvalid, load_topology, validate_topology

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"

# (line, col, message fragment) of every problem planted in data/planted_errors.yaml.
PLANTED: list[tuple[int, int, str]] = [
    # departments: entitlements
    (14, 9, "'nationl_id' is not a field of population_change; did you mean 'national_id'?"),
    (15, 9, "'change_type' is not a personal field of population_change"),
    (18, 9, "unknown event type 'camera_alarms'; did you mean 'camera_alarm'?"),
    (24, 11, "duplicate department name 'police': already defined at line 9"),
    (34, 5, "unknown key 'head'; the keys allowed here are: name, title, description, entitlements"),
    (37, 18, "address: 'forbidden' is not allowed; write one of: clear, masked, hash, partial, generalise, drop"),
    (38, 11, "'Street-Lighting' is not valid here; write snake_case"),
    # event types
    (47, 12, "unknown department 'polise'; did you mean 'police'?"),
    (48, 10, "key field 'location' is nullable"),
    (55, 12, "unknown department 'city_management'"),
    (56, 10, "key 'case_identifier' is not a field of city_case; did you mean 'case_id'?"),
    (57, 20, ("compatibility: 'BACKWARDS' is not allowed (did you mean BACKWARD?); write one of: BACKWARD, "
             "BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE")),
    (58, 17, "partitions: expected a whole number, got the text 'many'"),
    (60, 13, "schema file not found: looked for "),
    (64, 13, "schema file broken/broken_event.avsc does not load"),
    (67, 5, "missing required key 'owner': add `owner: police`"),
    (67, 11, "duplicate event type name 'camera_alarm': already defined at line 41"),
    (69, 5, "unknown key 'owners' (did you mean 'owner'?); the keys allowed here are: name, schema, owner, key"),
    # subscriptions: names
    (73, 17, "unknown department 'fire_brigad'; did you mean 'fire_brigade'?"),
    (78, 17, "unknown event type 'camera_alarms'; did you mean 'camera_alarm'?"),
    # subscriptions: filters
    (86, 19, "filter field 'alarm_typ' is not a field of camera_alarm; did you mean 'alarm_type'?"),
    (87, 35, "'FIRE' is not a symbol of AlarmType; write one of: INTRUSION, CROWD_GATHERING, FIRE_SMOKE"),
    (88, 31, "filter on 'count': expected a whole number like 5, got '5'"),
    (89, 30, "filter on 'count': expected a whole number like 5, got the boolean true"),
    (90, 35, "filter on 'confidence': expected a number like 0.8, got 'high'"),
    (91, 37, "filter on 'occurred_at': expected an RFC 3339 time with an offset"),
    (92, 33, "filter on 'severity': gt does not apply to an enum (Severity); use eq, ne, in or not_in"),
    (93, 34, "filter on 'camera_id': in: expected a string (quote it), got the number 7"),
    (94, 34, "prefix works on string fields only, and count is a whole number"),
    (95, 33, "location is a record (Location) and cannot be compared; compare one of its fields"),
    (96, 47, "in: 'LIUCHENG' is not a symbol of District"),  # a county of Liuzhou, not a district
    (97, 38, "filter on 'alarm_id': expected a UUID string"),
    (97, 51, "a filter condition needs exactly one operator, found eq, ne"),
    (98, 19, "department 'fire_brigade' has no entitlement to personal field camera_alarm.plate_number"),
    (106, 39, "filter on 'effective_date': expected a date YYYY-MM-DD like '2026-01-01', got '2026/01/01'"),
    (108, 19, "department 'police' has no entitlement to personal field population_change.national_id"),
    # subscriptions: fields and masks
    (109, 13, "fields leaves out population_change's key field 'person_id'; add it"),
    (109, 31, ("no entitlement to personal field population_change.national_id, so it is never delivered; "
              "remove it from fields")),
    (109, 44, "'birthdate' is not a field of population_change; did you mean 'birth_date'?"),
    (112, 7, "masks names 'birth_date', which fields does not select"),
    (112, 19, ("mask 'clear' would show more of population_change.birth_date than department 'police' may see "
              "(its entitlement is 'masked' = 'generalise'); write 'generalise' or 'hash' or 'drop'")),
    (113, 7, ("no entitlement to personal field population_change.household_id, so it is never delivered; "
             "remove it from masks")),
    (114, 7, "masks names 'change_type', which is not a personal field of population_change"),
    (115, 11, "duplicate subscription name 'fire-alarms': already defined at line 72"),
    (119, 25, "fields selects top-level fields; 'location.district' is nested: write 'location'"),
    (119, 44, "'camera_id' is listed twice in fields"),
    (121, 7, "masks names 'snapshot_url', which fields does not select"),
    (121, 21, ("mask 'hash' would show more of camera_alarm.snapshot_url than department 'fire_brigade' may see "
              "(its entitlement is 'masked' = 'drop'); write 'drop'")),
    (122, 12, "start: 'yesterday' is not now, earliest or an RFC 3339 time with an offset"),
    (128, 20, ("mask 'partial' would show more of population_change.national_id than department 'civil_affairs' "
              "may see (its entitlement is 'hash'); write 'hash' or 'drop'")),
    (129, 19, "mask 'masked' (the schema's mask 'generalise') would show more of population_change.birth_date"),
    # connectors
    (135, 17, ("department 'fire_brigade' would be a publisher that does not own camera_alarm: its owner is "
              "'police'")),
    (135, 31, "unknown event type 'city_cases'; did you mean 'city_case'?"),
    (139, 19, "subscription 'civil-deaths' belongs to department 'civil_affairs', not 'police'"),
    (140, 5, "a connector is a source or a sink"),
    (140, 11, "duplicate connector name 'skynet-webhook': already defined at line 132"),
    (148, 19, "unknown subscription 'no-such-subscription'; write one of the known subscriptions"),
    (150, 11, "connector type 'mqtt_sorce' is not installed (did you mean 'mqtt_source'?); the installed types are: "),
    # Connector settings, checked against each connector type's own config model.
    (132, 5, "missing required key 'auth': add `auth: "),
    (136, 5, "missing required key 'url'"),
    (136, 5, "missing required key 'hmac_key': add `hmac_key: env:"),
    (145, 5, "missing required key 'url'"),
    (145, 5, "missing required key 'hmac_key'"),
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted file next to a copy of schemas/ that also holds a broken schema file."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(REPO / "schemas", root / "schemas")
    (root / "schemas" / "broken").mkdir()
    shutil.copy(DATA / "broken_event.avsc", root / "schemas" / "broken" / "broken_event.avsc")
    return Path(shutil.copy(DATA / "planted_errors.yaml", root / "planted_errors.yaml"))


@pytest.fixture(scope="module")
def planted_problems(planted: Path) -> list[Problem]:
    return validate_topology(planted, KIT_CHECKS)


@pytest.mark.parametrize(("line", "col", "fragment"), PLANTED, ids=[f"{ln}:{c}" for ln, c, _ in PLANTED])
def test_planted_problem_is_reported_at_its_position(
    planted_problems: list[Problem], line: int, col: int, fragment: str
) -> None:
    here = [p.message for p in planted_problems if (p.line, p.col) == (line, col)]
    assert any(fragment in message for message in here), f"{line}:{col} reported: {here}"


def test_planted_file_reports_nothing_else_and_sorted(planted_problems: list[Problem], planted: Path) -> None:
    assert len(planted_problems) == len(PLANTED), "\n".join(map(str, planted_problems))
    assert planted_problems == sorted(planted_problems)
    assert {p.file for p in planted_problems} == {str(planted)}


def test_missing_schema_file_names_the_path_looked_for(planted_problems: list[Problem], planted: Path) -> None:
    message = next(p.message for p in planted_problems if (p.line, p.col) == (60, 13))
    assert str(planted.parent / "schemas" / "surveillance" / "camera_statuses.avsc") in message
    assert "did you mean 'surveillance/camera_status.avsc'?" in message


def test_load_raises_with_every_problem_but_the_type_not_installed(planted: Path) -> None:
    # The router, the processors and the page load the city and run no connector: whether a
    # connector's type is installed is for the host that runs it (and for `bus validate`).
    with pytest.raises(TopologyInvalid) as caught:
        load_topology(planted, KIT_CHECKS)
    assert len(caught.value.problems) == len(PLANTED) - 1
    assert not any("mqtt_sorce" in p.message for p in caught.value.problems)
    assert str(caught.value).startswith(f"{len(PLANTED) - 1} problem(s) in {planted}")
    assert f"{planted}:57:20: compatibility: 'BACKWARDS'" in str(caught.value)


# -- files that are not a topology at all ------------------------------------------------


def _only(path: Path) -> Problem:
    problems = validate_topology(path, KIT_CHECKS)
    assert len(problems) == 1, problems
    return problems[0]


def test_missing_file(tmp_path: Path) -> None:
    problem = _only(tmp_path / "nowhere.yaml")
    assert (problem.line, problem.col) == (1, 1)
    assert problem.message.startswith("file not found: ")
    assert str(problem) == f"{tmp_path / 'nowhere.yaml'}:1:1: {problem.message}"


def test_unreadable_path(tmp_path: Path) -> None:
    problem = _only(tmp_path)  # a folder
    assert (problem.line, problem.col) == (1, 1)
    assert "cannot read the file" in problem.message


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("version: 1\ncity:\n  name: Liuzhou Caf\xe9\n".encode("latin-1"))
    problem = _only(path)
    assert (problem.line, problem.col) == (1, 1)
    assert "not UTF-8 text (byte 0xe9 at offset 36, line 3); save it as UTF-8" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("version: 1\ncity: {name: x\ndepartments: []\n", 3, 12, "invalid YAML: expected ',' or '}', but got ':'"),
        ("version: 1\ncity:\n\tname: x\n", 3, 1, "indent with spaces, not tabs"),
        ("version: 1\n  city: x\n", 2, 7, "invalid YAML: mapping values are not allowed here"),
        ("", 1, 1, "the file is empty; start it with `version: 1`"),
        ("- police\n- health\n", 1, 1, "the top level is a list; it must be a mapping of keys: version, city"),
    ],
    ids=["unclosed-flow-mapping", "tab", "bad-indentation", "empty", "top-level-list"],
)
def test_bad_yaml(tmp_path: Path, text: str, line: int, col: int, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    problem = _only(path)
    assert (problem.line, problem.col) == (line, col)
    assert fragment in problem.message


def test_duplicate_mapping_keys_are_problems_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        f"version: 1\ncity:\n  name: A\n  name: B\nschemas_dir: {REPO / 'schemas'}\n"
        "departments:\n  - name: police\n    title: P\n    title: Q\nversion: 1\n",
        encoding="utf-8",
    )
    problems = validate_topology(path, KIT_CHECKS)
    assert [(p.line, p.col) for p in problems] == [(4, 3), (9, 5), (10, 1)]
    assert problems[0].message == (
        "duplicate key 'name': it is already set at line 3 of this mapping; keep only one of them "
        "(until then the first is used)"
    )
    assert "duplicate key 'title': it is already set at line 8" in problems[1].message
    assert "duplicate key 'version'" in problems[2].message


# -- single problems in an otherwise valid file -------------------------------------------


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "topology.yaml"
    head = f"version: 1\ncity: {{name: Test}}\nschemas_dir: {REPO / 'schemas'}\n"
    path.write_text(head + body, encoding="utf-8")
    return path


BASE = """departments:
  - {name: police, title: Police}
  - {name: fire_brigade, title: Fire}
event_types:
  - {name: camera_alarm, schema: surveillance/camera_alarm.avsc, owner: police, key: camera_id}
"""


@pytest.mark.parametrize(
    ("body", "line", "col", "fragment"),
    [
        ("bogus: 1\n" + BASE, 4, 1, "unknown key 'bogus'; the keys allowed here are: version, city, namespace"),
        (BASE.replace("title: Fire", "title: 42"), 6, 33, "title: expected a string, got the number 42"),
        (BASE.replace("key: camera_id", "key: location.district"), 8, 86,
         "key 'location.district' is a nested field; the key must be a top-level field"),
        (BASE.replace("name: camera_alarm", "name: camera_alert"), 8, 12,
         "event type 'camera_alert' uses surveillance/camera_alarm.avsc, which defines event type 'camera_alarm'"),
        (BASE + "subscriptions:\n  - {name: s, department: fire_brigade, event_type: camera_alarm, description: d,"
                " filter: {and: []}}\n", 10, 97, "and: the list is empty; give at least one item"),
        (BASE + "subscriptions:\n  - {name: s, department: fire_brigade, event_type: camera_alarm, description: d,"
                " filter: [a]}\n", 10, 91, "a filter is a mapping"),
        (BASE + "subscriptions:\n  - {name: s, department: fire_brigade, event_type: camera_alarm, description: d,"
                " filter: {field: count, in: []}}\n", 10, 110, "in needs at least one value"),
        (BASE + "subscriptions:\n  - {name: s, department: fire_brigade, event_type: camera_alarm, description: d,"
                " filter: {field: count, exists: yes}}\n", 10, 114, "exists: expected true or false, got the text"),
        (BASE + "subscriptions:\n  - {name: s, department: fire_brigade, event_type: camera_alarm, description: d,"
                " filter: {field: location.district, eq: null}}\n", 10, 122, "write exists: false"),
        (BASE.replace("key: camera_id", "key: camera_id, partitions: 0"), 8, 109,
         "partitions: input should be greater than or equal to 1"),
        ("namespace: Big Town\n" + BASE, 4, 12, "namespace: 'Big Town' is not valid here"),
    ],
    ids=["unknown-top-level-key", "wrong-type", "nested-key", "name-is-not-schema-stem", "empty-and",
         "filter-not-a-mapping", "empty-in", "exists-not-bool", "null-value", "partitions-zero", "namespace"],
)
def test_single_problem(tmp_path: Path, body: str, line: int, col: int, fragment: str) -> None:
    problem = _only(_write(tmp_path, body))
    assert fragment in problem.message, problem
    assert (problem.line, problem.col) == (line, col), problem


def test_missing_schema_folder_is_reported_at_schemas_dir(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("version: 1\ncity: {name: Test}\nschemas_dir: avro\n" + BASE, encoding="utf-8")
    problem = _only(path)
    assert (problem.line, problem.col) == (3, 14)
    assert problem.message == (
        f"schema folder not found: {tmp_path / 'avro'}; set schemas_dir to the folder that holds the .avsc "
        "files (relative to this file)"
    )


def test_a_broken_schema_no_event_type_uses_is_reported_at_schemas_dir(tmp_path: Path) -> None:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    (tmp_path / "schemas" / "broken").mkdir()
    shutil.copy(DATA / "broken_event.avsc", tmp_path / "schemas" / "broken" / "broken_event.avsc")
    path = tmp_path / "topology.yaml"
    path.write_text("version: 1\ncity: {name: Test}\nschemas_dir: schemas\n" + BASE, encoding="utf-8")
    problem = _only(path)
    assert (problem.line, problem.col) == (3, 14)
    assert "a schema file under schemas_dir does not load" in problem.message
    assert "broken_event.avsc" in problem.message


def test_valid_minimal_file_loads(tmp_path: Path) -> None:
    topology = load_topology(_write(tmp_path, BASE))
    assert topology.schema_for("camera_alarm").name == "camera_alarm"
    assert topology.source == tmp_path / "topology.yaml"


# -- connector types: `bus validate` refuses one that is not installed -------------------

SOURCE = BASE + """connectors:
  - name: scene-cameras
    type: TYPE
    department: police
    publishes: [camera_alarm]
    config: {topics: [cameras/+/status]}
"""
HOW = ("(a connector type is an installed package that declares an entry point in the group 'bus.connectors'; "
       "`bus connector list` shows them)")


def _installed() -> str:
    from bus.connect.registry import installed

    names = sorted(installed())
    assert "mqtt_source" in names, names  # the package's own types are installed (pip install -e .)
    return ", ".join(names)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("mqtt_sorce", "connector type 'mqtt_sorce' is not installed (did you mean 'mqtt_source'?); the installed "
                       "types are: {installed} {how}"),
        ("http_webhook", "connector type 'http_webhook' is not installed (did you mean 'http_webhook_sink'?); the "
                         "installed types are: {installed} {how}"),
        ("kafka_bridge", "connector type 'kafka_bridge' is not installed; the installed types are: {installed} {how}"),
    ],
    ids=["typo", "truncated", "nothing-close"],
)
def test_a_connector_type_not_installed_is_a_problem_at_its_line(tmp_path: Path, written: str, expected: str) -> None:
    problem = _only(_write(tmp_path, SOURCE.replace("TYPE", written)))
    assert (problem.line, problem.col) == (11, 11), problem
    assert problem.message == expected.format(installed=_installed(), how=HOW)


def test_an_installed_connector_type_passes_and_its_config_is_checked(tmp_path: Path) -> None:
    assert validate_topology(_write(tmp_path, SOURCE.replace("TYPE", "mqtt_source")), KIT_CHECKS) == []
    problems = validate_topology(_write(tmp_path, SOURCE.replace("TYPE", "mqtt_source").replace("topics:", "topic:")), KIT_CHECKS)
    assert [(p.line, p.col) for p in problems] == [(14, 13), (14, 14)], problems
    assert "missing required key 'topics'" in problems[0].message
    assert "unknown key 'topic' (did you mean 'topics'?)" in problems[1].message


def test_no_connector_type_installed_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bus.connect.registry.installed_types", lambda entry_points=None: {})
    problem = _only(_write(tmp_path, SOURCE.replace("TYPE", "mqtt_source")))
    assert (problem.line, problem.col) == (11, 11), problem
    assert problem.message == f"connector type 'mqtt_source' is not installed, and no connector type is; {HOW[1:-1]}"


def test_bus_validate_prints_the_type_not_installed_with_its_line(tmp_path: Path) -> None:
    shipped = (REPO / "topology.yaml").read_text(encoding="utf-8")
    broken = shipped.replace("type: mqtt_source", "type: mqtt_sorce").replace(
        "schemas_dir: schemas", f"schemas_dir: {REPO / 'schemas'}")
    path = tmp_path / "topology.yaml"
    path.write_text(broken, encoding="utf-8")
    line = broken.splitlines().index("    type: mqtt_sorce") + 1
    result = subprocess.run([sys.executable, "-m", "bus", "validate", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result
    assert result.stdout.splitlines() == [
        f"{path}:{line}:11: connector type 'mqtt_sorce' is not installed (did you mean 'mqtt_source'?); the "
        f"installed types are: {_installed()} {HOW}"]
    assert result.stderr.strip() == f"1 problem(s) in {path}"
    ok = subprocess.run([sys.executable, "-m", "bus", "validate", str(REPO / "topology.yaml")], capture_output=True,
                        text=True, timeout=120, check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{REPO / 'topology.yaml'}: OK"), ok


def test_connector_settings_are_checked_by_the_kit_only_where_it_is_given(tmp_path: Path) -> None:
    # The topology package cannot import the connector kit (the kit builds on it): bus validate,
    # bus up, bus apply and the connector commands hand it the kit's checks; a router loads the
    # city without them.
    path = _write(tmp_path, SOURCE.replace("TYPE", "mqtt_source").replace("topics:", "topic:"))
    assert load_topology(path).connectors[0].type == "mqtt_source"
    with pytest.raises(TopologyInvalid, match="unknown key 'topic'"):
        load_topology(path, KIT_CHECKS)
    assert validate_topology(path) == []
