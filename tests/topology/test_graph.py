"""`bus graph` and render_svg: every department, event type and subscription drawn, the
flows as edges, no overlapping nodes, escaped text, the same bytes every time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

import bus.cli.web  # noqa: F401  (adds `bus graph` to the app)
from bus.cli.app import app
from bus.topology.exceptions import TopologyError
from bus.topology.graph import render_svg
from bus.topology.models import Topology
from bus.topology.validate import load_topology

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def shipped() -> Topology:
    return load_topology(REPO / "topology.yaml")


def nodes(root: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["id"]: g for g in root.iter(f"{SVG}g") if "node" in g.attrib.get("class", "").split()}


def edges(root: ET.Element) -> set[tuple[str, str, str]]:
    return {
        (p.attrib["data-from"], p.attrib["data-to"], p.attrib["class"].split()[1]) for p in root.iter(f"{SVG}path")
    }


def test_every_department_event_type_and_subscription_is_drawn(shipped: Topology) -> None:
    root = ET.fromstring(render_svg(shipped))
    drawn = nodes(root)
    owners = {et.owner for et in shipped.event_types}
    receivers = {s.department for s in shipped.subscriptions}
    for d in shipped.departments:
        if d.name in owners:
            assert f"publisher:{d.name}" in drawn
        if d.name in receivers:
            assert f"receiver:{d.name}" in drawn
        if d.name not in owners | receivers:
            assert f"idle:{d.name}" in drawn
        # The label is the department's title; its id is under it.
        mine = [g for g in drawn.values() if g.attrib.get("data-department") == d.name]
        texts = [t.text for g in mine for t in g.iter(f"{SVG}text")]
        assert d.title in texts and (d.title == d.name or d.name in texts)
    assert {f"event-type:{et.name}" for et in shipped.event_types} <= set(drawn)
    assert {f"subscription:{s.name}" for s in shipped.subscriptions} <= set(drawn)
    assert drawn["subscription:fire-alarms"].attrib["data-subscription"] == "fire-alarms"


def test_the_flows_are_the_edges(shipped: Topology) -> None:
    drawn = edges(ET.fromstring(render_svg(shipped)))
    expected = {(f"publisher:{et.owner}", f"event-type:{et.name}", "publishes") for et in shipped.event_types}
    for s in shipped.subscriptions:
        expected.add((f"event-type:{s.event_type}", f"subscription:{s.name}", "routes"))
        expected.add((f"subscription:{s.name}", f"receiver:{s.department}", "delivers"))
    assert drawn == expected


def test_nodes_of_a_column_do_not_overlap_and_fit_the_picture(shipped: Topology) -> None:
    root = ET.fromstring(render_svg(shipped))
    height, width = float(root.attrib["height"]), float(root.attrib["width"])
    columns: dict[float, list[tuple[float, float]]] = {}
    for g in nodes(root).values():
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        x, y, w, h = (float(rect.attrib[k]) for k in ("x", "y", "width", "height"))
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        columns.setdefault(x, []).append((y, y + h))
    assert len(columns) == 4
    for spans in columns.values():
        spans.sort()
        for (_, bottom), (top, _) in zip(spans, spans[1:]):
            assert top >= bottom, f"overlap at y={top}"


def test_the_same_topology_gives_the_same_bytes(shipped: Topology) -> None:
    assert render_svg(shipped) == render_svg(load_topology(REPO / "topology.yaml"))


def small_city(**overrides: Any) -> Topology:
    data: dict[str, Any] = {
        "version": 1,
        "city": {"name": "Test <City> & \"Co\""},
        "departments": [
            {"name": "police", "title": "Police <b>Bureau</b> & 'Co'"},
            {"name": "fire", "title": "消防救援支队"},
            {"name": "archive", "title": "Archive"},
        ],
        "event_types": [{"name": "alarm", "schema": "a.avsc", "owner": "police", "key": "id"}],
        "subscriptions": [
            {"name": "fire-alarms", "department": "fire", "event_type": "alarm", "description": "for <dispatch>"},
        ],
    }
    data.update(overrides)
    return Topology.model_validate(data)


def test_text_is_escaped_and_reads_back_as_written() -> None:
    svg = render_svg(small_city())
    assert "<b>" not in svg and "<dispatch>" not in svg
    root = ET.fromstring(svg)  # well-formed XML despite <, &, quotes in names
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert "Police <b>Bureau</b> & 'Co'" in texts and "消防救援支队" in texts
    assert root.attrib["aria-label"] == 'Data flows of Test <City> & "Co"'
    titles = {t.text for t in root.iter(f"{SVG}title")}
    assert "fire-alarms: for <dispatch> (topic city.sub.fire.fire-alarms)" in titles


def test_a_department_without_flows_is_drawn_idle_and_wide_text_widens_its_box() -> None:
    root = ET.fromstring(render_svg(small_city()))
    drawn = nodes(root)
    assert "idle" in drawn["idle:archive"].attrib["class"].split()
    assert set(drawn) == {"publisher:police", "event-type:alarm", "subscription:fire-alarms", "receiver:fire",
                          "idle:archive"}
    # Six CJK characters take a full em each: the box is wider than six Latin ones would need.
    rect = drawn["receiver:fire"].find(f"{SVG}rect")
    assert rect is not None and float(rect.attrib["width"]) >= 6 * 13


def test_an_empty_city_is_still_a_picture() -> None:
    root = ET.fromstring(render_svg(small_city(event_types=[], subscriptions=[])))
    assert set(nodes(root)) == {"idle:police", "idle:fire", "idle:archive"}
    assert edges(root) == set()


def invoke(args: list[str]) -> Result:
    saved = structlog.get_config()
    try:
        return CliRunner().invoke(app, args)
    finally:
        structlog.configure(**saved)


def test_bus_graph_writes_the_svg(tmp_path: Path, shipped: Topology) -> None:
    out = tmp_path / "city.svg"
    result = invoke(["graph", "--topology", str(REPO / "topology.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == render_svg(shipped)
    to_stdout = invoke(["graph", "--topology", str(REPO / "topology.yaml")])
    assert to_stdout.exit_code == 0 and to_stdout.stdout == render_svg(shipped)


def test_bus_graph_of_a_broken_topology_says_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "topology.yaml"
    broken.write_text("version: 1\ncity: {name: X}\ndepartments: [{name: Police}]\n", encoding="utf-8")
    result = invoke(["graph", "--topology", str(broken), "-o", str(tmp_path / "x.svg")])
    assert isinstance(result.exception, TopologyError) and "Police" in str(result.exception)
    assert not (tmp_path / "x.svg").exists()
