"""Build throwaway distributions on disk, so discovery is tested through real metadata."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 12):
    from importlib import metadata
else:
    import importlib_metadata as metadata


def make_dist(
    root: Path,
    dist_name: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str],
) -> None:
    """Write ``<dist_name>-1.0.dist-info`` with ``entry_points`` and the module files."""
    info = root / f"{dist_name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in eps.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)


def source_for(root: Path):
    """An entry-point source reading only the distributions under ``root``."""

    def source(group: str):
        found = []
        for dist in metadata.distributions(path=[str(root)]):
            found.extend(ep for ep in dist.entry_points if ep.group == group)
        return found

    return source
