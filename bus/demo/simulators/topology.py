"""The demo copy of a topology: its connectors pointed at the demo city's simulators.

Only connector ``config`` values change (URLs, ports, topics, paths, secret references),
except for the population base without PostgreSQL, whose connector becomes the
``file_drop`` reader of the registry's CSV exports. Comments and layout are kept (ruamel
round-trip). ``schemas_dir`` is made absolute when the copy lives in another folder, so
it still finds the schemas.
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from bus.demo.simulators.city import DemoCity
from bus.demo.simulators.exceptions import SimulatorError

FILE_NAME = "topology.demo.yaml"


def demo_topology(topology_path: Path | str, demo: DemoCity, out_dir: Path | str) -> Path:
    """Write ``<out_dir>/topology.demo.yaml`` from ``topology_path`` with ``demo``'s
    overrides (``demo`` opened); returns its path."""
    source = Path(topology_path).resolve()
    target_dir = Path(out_dir).resolve()
    if not demo.overrides:
        raise SimulatorError("the demo city has no connector to point anywhere: open() it before writing the demo "
                             "topology (or the topology has no connector the simulators serve)")
    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(source.read_text(encoding="utf-8"))
    found = set()
    for connector in data.get("connectors") or []:
        override = demo.overrides.get(connector.get("name"))
        if override is None:
            continue
        found.add(connector["name"])
        if override.type is not None:
            connector["type"] = override.type
            connector["config"] = CommentedMap()
        config = connector.setdefault("config", CommentedMap())
        for key, value in override.config.items():  # a mapping (auth) is replaced whole: no stale secret stays
            config[key] = value
    missing = sorted(set(demo.overrides) - found)
    if missing:
        raise SimulatorError(f"{source} has no connector named {', '.join(missing)}: write the demo topology from "
                             "the file the demo city was built from")
    schemas_dir = Path(str(data.get("schemas_dir", "schemas")))
    if not schemas_dir.is_absolute() and target_dir != source.parent:
        data["schemas_dir"] = str(source.parent / schemas_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / FILE_NAME
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path

