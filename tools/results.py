"""What the measuring scripts of `tools/` share: which specs to run, their results merged by key
into a JSON file under docs/, and the markdown table they render between two markers of a doc
(regenerated in place, so the prose around it stays the author's)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spec_paths(only: str | None = None) -> list[Path]:
    """specs/*.arch in name order; `only`: comma-separated spec names."""
    specs = sorted((ROOT / "specs").glob("*.arch"))
    return [p for p in specs if p.stem in only.split(",")] if only else specs


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def record(path: Path, results: dict, key: str, row: dict) -> None:
    """Merge one spec's `row` into `results`, save them at once (a long run that dies keeps what
    it measured) and print the row as a JSON line."""
    results[key] = row
    save_results(path, results)
    print(json.dumps(row), flush=True)


def publish(results_path: Path, doc: Path, start: str, end: str, table: str) -> None:
    """Render `table` into `doc` between its markers, only for results kept under docs/ (a trial
    run whose results go elsewhere leaves the doc alone)."""
    if results_path.parent == ROOT / "docs":
        write_table(doc, start, end, table)


def write_table(doc: Path, start: str, end: str, table: str) -> None:
    """Replace what stands between the markers `start` and `end` of `doc` with `table` (a doc
    without the markers is left alone)."""
    text = doc.read_text()
    if start in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        doc.write_text(f"{before}{start}\n{table}\n{end}{after}")
