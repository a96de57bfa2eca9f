"""bench/semantic_pool.py reads the paired rows that bench/semantic_bench.py writes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pool_sums_discordant_segments_and_counts_seeds(tmp_path):
    bench, pool = _load("semantic_bench"), _load("semantic_pool")
    # per image: (verdict A, verdict B, fraction A, fraction B)
    seeds = [[(True, False, 1.0, 0.5)] + [(False, True, 0.5, 1.0)] * 3 + [(True, True, 1, 1)],
             [(True, False, 1.0, 0.5)] * 2 + [(False, False, 0.2, 0.2)]]
    files = []
    for i, pairs in enumerate(seeds):
        rows = [bench._pair_row("A → B, rotate", pairs),
                bench._pair_row("**A → B, all directions**", pairs)]
        files.append(tmp_path / f"s{i}.md")
        files[-1].write_text("\n".join(["# header", *rows, ""]))
    assert set(pool.read_rows(files[0])) == {"A → B, rotate", "A → B, all directions"}
    pooled = pool.pooled_table(files)
    assert len(pooled) == 3  # header, rule, the pooled row only
    cells = [c.strip() for c in pooled[2].split("|")]
    # pair, seeds, pairs, A only, B only, McNemar p, seeds B>A / A>B / tie, sign p, fraction
    assert cells[1:6] == ["A → B, all directions", "2", "8", "3", "3"]
    assert cells[7] == "1 / 1 / 0"
    assert len(pool.pooled_table(files, per_direction=True)) == 4
