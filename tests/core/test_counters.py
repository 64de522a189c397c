"""The counters behind ``tilefuse.stats()``: every standard one is documented."""

from __future__ import annotations

from pathlib import Path

from tilefuse import counters

README = Path(__file__).resolve().parents[2] / "packages" / "core" / "README.md"


def test_every_standard_counter_is_in_the_readme_stats_row():
    row = next(line for line in README.read_text().splitlines() if "tilefuse.stats()" in line)
    missing = [name for name in counters.STANDARD if f"`{name}`" not in row]
    assert not missing, f"counters.STANDARD not documented in {README}: {missing}"
