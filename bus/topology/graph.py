"""The topology as a picture (SVG): who publishes what, who receives it, through which subscription.

Four columns, left to right, the way an event flows: the departments that publish
(owners of event types) | event types | subscriptions | the departments that receive.
A department that does both appears on both sides; a department with no flow yet is
listed, dimmed, under the receiving ones so that every department of the city is drawn.

The layout is layered and deterministic (the same topology gives the same bytes, so the
picture can be committed and diffed): subscriptions are stacked in topology order grouped
by event type, and every other node sits at the mean height of its neighbours in that
column (the barycentre heuristic of layered graph drawing), pushed apart where nodes
would overlap. It is hand-written SVG, so no graphviz binary is needed on a city's
machines, and the page can colour a subscription by its live status through the
``data-subscription`` attribute of its node.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bus.topology.models import Topology

Kind = Literal["source", "event-type", "subscription", "receiver", "idle"]

FONT = 13
SMALL_FONT = 11
PAD_X = 10
COLUMN_GAP = 110
MARGIN = 20
HEADER = 36
GAP_Y = 8
ONE_LINE = 24
TWO_LINES = 38

COLUMN_TITLES = ("Publishing departments", "Event types", "Subscriptions", "Receiving departments")

STYLE = """
.graph-bg { fill: #ffffff; }
.column-title { font: 600 13px system-ui, sans-serif; fill: #334155; }
.node rect { stroke-width: 1.2; }
.node text { font-family: system-ui, sans-serif; fill: #0f172a; }
.node .sub { fill: #475569; }
.source rect, .receiver rect { fill: #dbeafe; stroke: #1d4ed8; }
.event-type rect { fill: #ffedd5; stroke: #c2410c; }
.subscription rect { fill: #f1f5f9; stroke: #64748b; }
.idle rect { fill: #f8fafc; stroke: #cbd5e1; stroke-dasharray: 4 3; }
.idle text { fill: #94a3b8; }
.edge { fill: none; stroke: #94a3b8; stroke-width: 1.2; }
.edge.publishes { stroke: #1d4ed8; }
.edge.routes { stroke: #c2410c; }
.edge.delivers { stroke: #15803d; }
.subscription.status-ok rect { fill: #dcfce7; stroke: #15803d; }
.subscription.status-warn rect { fill: #fef9c3; stroke: #a16207; }
.subscription.status-err rect { fill: #fee2e2; stroke: #b91c1c; }
.subscription.status-missing rect { fill: #f8fafc; stroke: #b91c1c; stroke-dasharray: 4 3; }
"""


@dataclass
class _Node:
    id: str
    column: int
    kind: Kind
    label: str
    sublabel: str | None = None
    tooltip: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    y: float = 0.0  # centre

    @property
    def height(self) -> int:
        return TWO_LINES if self.sublabel else ONE_LINE


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    kind: Literal["publishes", "routes", "delivers"]


def render_svg(topology: Topology) -> str:
    """The topology as a standalone SVG document (UTF-8 text)."""
    columns, edges = _graph(topology)
    _place(columns, edges)
    widths = [max((_node_width(n) for n in col), default=120) for col in columns]
    xs: list[float] = []
    x = float(MARGIN)
    for w in widths:
        xs.append(x)
        x += w + COLUMN_GAP
    width = x - COLUMN_GAP + MARGIN
    height = max((n.y + n.height / 2 for col in columns for n in col), default=HEADER) + MARGIN
    by_id = {n.id: n for col in columns for n in col}

    city = topology.city.name
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" class="bus-graph" '
        f'aria-label="{_e(f"Data flows of {city}")}">',
        f"<title>{_e(f'Data flows of {city}: departments, event types, subscriptions')}</title>",
        f"<style>{STYLE}</style>",
        f'<rect class="graph-bg" x="0" y="0" width="{width:.0f}" height="{height:.0f}"/>',
    ]
    for i, title in enumerate(COLUMN_TITLES):
        out.append(f'<text class="column-title" x="{xs[i]:.1f}" y="{MARGIN + 8}">{_e(title)}</text>')
    out.append('<g class="edges">')
    for edge in edges:
        a, b = by_id[edge.source], by_id[edge.target]
        x1, x2 = xs[a.column] + widths[a.column], xs[b.column]
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge {edge.kind}" data-from="{_e(a.id)}" data-to="{_e(b.id)}" '
            f'd="M{x1:.1f},{a.y:.1f} C{mid:.1f},{a.y:.1f} {mid:.1f},{b.y:.1f} {x2:.1f},{b.y:.1f}"/>'
        )
    out.append("</g>")
    out.append('<g class="nodes">')
    for col in columns:
        for node in col:
            out.append(_node_svg(node, xs[node.column], widths[node.column]))
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- the graph --------------------------------------------------------------------------------


def _graph(topology: Topology) -> tuple[list[list[_Node]], list[_Edge]]:
    titles = {d.name: d.title for d in topology.departments}
    owners = {et.owner for et in topology.event_types}
    receivers = {s.department for s in topology.subscriptions}

    def department(name: str, column: int, kind: Kind, prefix: str) -> _Node:
        title = titles.get(name, name)
        return _Node(
            f"{prefix}:{name}", column, kind, title, name if title != name else None,
            tooltip=f"{title} ({name})", data={"department": name},
        )

    sources = [department(d.name, 0, "source", "publisher") for d in topology.departments if d.name in owners]
    event_types = [
        _Node(
            f"event-type:{et.name}", 1, "event-type", et.name, f"owner {et.owner}, key {et.key}",
            tooltip=f"{et.name}: topic {et.topic}", data={"event-type": et.name},
        )
        for et in topology.event_types
    ]
    order = {et.name: i for i, et in enumerate(topology.event_types)}
    ordered = sorted(enumerate(topology.subscriptions), key=lambda p: (order.get(p[1].event_type, len(order)), p[0]))
    subscriptions = [
        _Node(
            f"subscription:{s.name}", 2, "subscription", s.name,
            tooltip=f"{s.name}: {s.description} (topic {s.topic})", data={"subscription": s.name},
        )
        for _, s in ordered
    ]
    receiving = [department(d.name, 3, "receiver", "receiver") for d in topology.departments if d.name in receivers]
    idle = [
        department(d.name, 3, "idle", "idle")
        for d in topology.departments
        if d.name not in owners and d.name not in receivers
    ]
    edges = [_Edge(f"publisher:{et.owner}", f"event-type:{et.name}", "publishes") for et in topology.event_types
             if et.owner in owners and et.owner in titles]
    for _, s in ordered:
        edges.append(_Edge(f"event-type:{s.event_type}", f"subscription:{s.name}", "routes"))
        edges.append(_Edge(f"subscription:{s.name}", f"receiver:{s.department}", "delivers"))
    known = {n.id for n in [*sources, *event_types, *subscriptions, *receiving]}
    edges = [e for e in edges if e.source in known and e.target in known]
    return [sources, event_types, subscriptions, receiving + idle], edges


def _place(columns: list[list[_Node]], edges: Sequence[_Edge]) -> None:
    """Stack the subscriptions, then put every other column at its barycentres."""
    top = float(HEADER + MARGIN)
    _stack(columns[2], top)
    neighbours: dict[str, list[str]] = {}
    for e in edges:
        neighbours.setdefault(e.source, []).append(e.target)
        neighbours.setdefault(e.target, []).append(e.source)
    placed = {n.id: n.y for n in columns[2]}
    for index in (1, 3, 0):  # event types and receivers from subscriptions, publishers from event types
        column = columns[index]
        for node in column:
            near = [placed[i] for i in neighbours.get(node.id, []) if i in placed]
            node.y = sum(near) / len(near) if near else float("inf")
        keyed = sorted(enumerate(column), key=lambda p: (p[1].y, p[0]))
        column[:] = [node for _, node in keyed]
        _spread(column, top)
        placed.update({n.id: n.y for n in column})


def _stack(column: list[_Node], top: float) -> None:
    y = top
    for node in column:
        node.y = y + node.height / 2
        y += node.height + GAP_Y


def _spread(column: list[_Node], top: float) -> None:
    """Keep the wanted heights where possible; push apart where nodes would overlap.
    Nodes without a wanted height (infinite) go below the others."""
    previous_bottom = top - GAP_Y
    for node in column:
        wanted = node.y if node.y != float("inf") else previous_bottom
        node.y = max(wanted, previous_bottom + GAP_Y + node.height / 2)
        previous_bottom = node.y + node.height / 2


# -- drawing ------------------------------------------------------------------------------------


def _node_svg(node: _Node, x: float, width: float) -> str:
    top = node.y - node.height / 2
    data = "".join(f' data-{k}="{_e(v)}"' for k, v in sorted(node.data.items()))
    parts = [
        f'<g class="node {node.kind}" id="{_e(node.id)}"{data}>',
        f"<title>{_e(node.tooltip or node.label)}</title>",
        f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{node.height}" rx="5" ry="5"/>',
    ]
    if node.sublabel:
        parts.append(f'<text x="{x + PAD_X:.1f}" y="{top + 16:.1f}" font-size="{FONT}">{_e(node.label)}</text>')
        parts.append(
            f'<text class="sub" x="{x + PAD_X:.1f}" y="{top + 31:.1f}" font-size="{SMALL_FONT}">'
            f"{_e(node.sublabel)}</text>"
        )
    else:
        parts.append(f'<text x="{x + PAD_X:.1f}" y="{top + 16.5:.1f}" font-size="{FONT}">{_e(node.label)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _node_width(node: _Node) -> float:
    lines = [(node.label, FONT)] + ([(node.sublabel, SMALL_FONT)] if node.sublabel else [])
    return max(_text_width(text, size) for text, size in lines) + 2 * PAD_X


def _text_width(text: str, size: int) -> float:
    """An estimate without a font engine: wide (CJK) characters take a full em, others ~0.6."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.6 * size for c in text)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
