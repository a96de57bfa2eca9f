"""Pool the paired comparisons of several `semantic_bench.py --common --out` runs (one per seed).

    python bench/semantic_pool.py /tmp/runs/paired_s*.md [--per-direction]

For each pair A → B it reads the "all directions" row of every file (with --per-direction
also each direction's row) and prints one row: the seeds, the segments certified by only A /
only B summed over the seeds, McNemar's exact p on those sums, and a sign test over the seeds
(in how many seeds B certified more segments than A, in how many fewer). The sign test is
the one to trust: seeds are independent trainings, while the five directions of one image
(and one image across seeds) are not independent pairs, which the summed McNemar p ignores.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from nncert.smoothing.stats import binomial_pvalue

ROW = re.compile(r"^\| (?:\*\*)?(?P<pair>[^|*]+?, [\w ]+?)(?:\*\*)? \| (?P<n>\d+) \| (?P<both>\d+) \| "
                 r"(?P<a>\d+) \| (?P<b>\d+) \| (?P<neither>\d+) \| [\d.]+ \| (?P<frac>[+-][\d.]+) \|")


def read_rows(path: Path) -> dict[str, tuple[int, int, int, float]]:
    """{"A → B, direction": (images, A only, B only, mean fraction B − A)} from one bench
    output; the pooled rows have the direction "all directions"."""
    rows = {}
    for line in path.read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows[m["pair"]] = (int(m["n"]), int(m["a"]), int(m["b"]), float(m["frac"]))
    return rows


def pooled_table(files: list[Path], per_direction: bool = False) -> list[str]:
    """The pooled Markdown table (header, rule, one row per pair, or per pair and direction)."""
    per_pair: dict[str, list] = defaultdict(list)
    for f in files:
        for pair, row in read_rows(f).items():
            if per_direction or pair.endswith(", all directions"):
                per_pair[pair].append(row)
    out = ["| A → B | seeds | pairs | A only | B only | McNemar p (summed) | seeds B > A / A > B / tie "
           "| sign-test p | mean fraction B − A |", "|---" * 9 + "|"]
    for pair, rows in per_pair.items():
        a, b = sum(r[1] for r in rows), sum(r[2] for r in rows)
        p = binomial_pvalue(b, a + b)
        up = sum(r[2] > r[1] for r in rows)
        down = sum(r[2] < r[1] for r in rows)
        sign = binomial_pvalue(up, up + down)
        frac = sum(r[3] for r in rows) / len(rows)
        out.append(f"| {pair} | {len(rows)} | {sum(r[0] for r in rows)} | {a} | {b} | {p:.2g} | "
                   f"{up} / {down} / {len(rows) - up - down} | {sign:.3f} | {frac:+.3f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="outputs of semantic_bench.py --common --out")
    ap.add_argument("--per-direction", action="store_true", help="a row per direction too")
    args = ap.parse_args()
    print("\n".join(pooled_table(args.files, args.per_direction)))


if __name__ == "__main__":
    main()
