"""Reports of results files: Markdown and one self-contained HTML page (plots embedded as
base64 PNG, no external resource: it opens offline), with matplotlib plots.

Every number in a report is computed from the rows by :func:`tables` (the Markdown is those
tables verbatim): certified accuracy per model, method and ε (with the clean accuracy and the
upper bound that the counterexamples found leave), VNN-COMP counts per benchmark and method
(correct and wrong against the expected answers), and a leaderboard. Peers' VNN-COMP results
(``--peer NAME=results.csv``) join the rows of the instances they share with ours.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..tables import read_rows
from ..utils import open_output, write_atomic
from .runner import read_results

#: VNN-COMP result words of the years' CSVs → ours
PEER_WORDS = {"holds": "unsat", "unsat": "unsat", "violated": "sat", "sat": "sat",
              "timeout": "timeout", "unknown": "unknown", "error": "error"}
SOLVED = ("verified", "falsified")


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---:" if self._numeric(i) else "---"
                              for i in range(len(self.columns))) + "|"
        body = ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join([f"## {self.title}", "", head, rule, *body, ""])

    def _numeric(self, col: int) -> bool:
        def num(v: str) -> bool:
            try:
                float(v.rstrip("%"))
            except ValueError:
                return v == "-"
            return True

        return bool(self.rows) and all(num(r[col]) for r in self.rows)

    def html(self) -> str:
        th = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                      for r in self.rows)
        return f"<h2>{html.escape(self.title)}</h2><table><tr>{th}</tr>{trs}</table>"


# -- rows -----------------------------------------------------------------------------------
def load_rows(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The rows of every results file (robustness rows get ``method``; VNN-COMP rows
    ``method`` = ``nncert``)."""
    rows = []
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"results file {p} not found")
        for r in read_results(p):
            _check_row(r, p)
            if r.get("kind") == "vnncomp":
                r = {**r, "method": r.get("method", "nncert")}
            rows.append(r)
    return rows


_NEEDS = {"robustness": ("suite", "model", "method", "eps", "label"),
          "vnncomp": ("suite", "onnx", "vnnlib", "result")}


def _check_row(r: dict, path) -> None:
    """DataError naming the file and the row's key when a row lacks what the report reads."""
    kind = r.get("kind")
    if kind not in _NEEDS:
        raise DataError(f"{path}: row {str(r.get('key'))[:80]!r} has no known kind "
                        "(robustness or vnncomp)")
    missing = [k for k in _NEEDS[kind] if k not in r]
    t = r.get("time_s")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        missing.append("time_s (a number of seconds)")
    if missing:
        raise DataError(f"{path}: row {str(r.get('key'))[:80]!r} lacks {', '.join(missing)}")


def parse_peer(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--peer {spec!r}: expected NAME=results.csv")
    return name, Path(path)


def peer_rows(name: str, path: Path, ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A peer's VNN-COMP results CSV (``category,onnx,vnnlib,prepare_time,result,run_time``, or
    nncert's ``onnx,vnnlib,result,time_s``) as rows of the instances it shares with ``ours``
    (matched by the file names of the network and the property)."""
    index = {(Path(r["onnx"]).name, Path(r["vnnlib"]).name): r for r in ours
             if r.get("kind") == "vnncomp" and r.get("method") == "nncert"}
    out = []
    for row in read_rows(path, f"peer {name!r} results file"):
        f = [x.strip() for x in row.fields]
        if f[:3] == ["onnx", "vnnlib", "result"] or (f and f[0] == "category"):
            continue
        onnx, vnnlib, word, t = _peer_fields(f, path, row.line)
        own = index.get((Path(onnx).name, Path(vnnlib).name))
        if own is None:
            continue
        out.append({**{k: own[k] for k in ("suite", "kind", "onnx", "vnnlib", "timeout")},
                    "key": own["key"], "expected": own.get("expected"), "method": name,
                    "result": word, "verdict": _verdict(word), "time_s": t})
    if not out:
        raise DataError(f"peer {name!r}: no row of {path} matches an instance of the results")
    return out


def _peer_fields(f: list[str], path: Path, line: int) -> tuple[str, str, str, float]:
    if len(f) == 6:
        onnx, vnnlib, word, t = f[1], f[2], f[4], f[5]
    elif len(f) == 4:
        onnx, vnnlib, word, t = f
    else:
        raise DataError(f"{path}:{line}: expected 6 fields (category,onnx,vnnlib,prepare_time,"
                        f"result,run_time) or 4 (onnx,vnnlib,result,time_s), got {len(f)}")
    try:
        secs = float(t)
    except ValueError:
        raise DataError(f"{path}:{line}: time {t[:20]!r} is not a number") from None
    return onnx, vnnlib, PEER_WORDS.get(word.lower(), "unknown"), secs


def _verdict(word: str) -> str:
    return {"unsat": "verified", "sat": "falsified"}.get(word, word)


# -- tables ---------------------------------------------------------------------------------
def _pct(a: int, n: int) -> str:
    return f"{100 * a / n:.1f}%" if n else "-"


def _secs(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"


def _eps(e: float) -> str:
    return f"{e:g}"


def certified_table(rows: list[dict]) -> Table | None:
    """Per (model, method, ε): points, clean accuracy, verified, certified accuracy,
    falsified, the upper bound (points not falsified) and the mean time per point."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "robustness":
            groups[(r["model"], r["method"], r["eps"])].append(r)
    if not groups:
        return None
    out = []
    for (model, method, eps), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        n = len(rs)
        clean = sum(r.get("prediction") == r["label"] for r in rs)
        ver = sum(r["verdict"] == "verified" for r in rs)
        fal = sum(r["verdict"] == "falsified" for r in rs)
        out.append((model, method, _eps(eps), str(n), _pct(clean, n), str(ver), _pct(ver, n),
                    str(fal), _pct(n - fal, n), _secs([r["time_s"] for r in rs])))
    return Table("Certified accuracy", ("model", "method", "eps", "points", "clean accuracy",
                                        "verified", "certified accuracy", "falsified",
                                        "upper bound", "mean time (s)"), tuple(out))


def vnncomp_table(rows: list[dict]) -> Table | None:
    """Per (benchmark, method): instances, solved (sat + unsat), correct and wrong against the
    expected answers, unsolved, errors, the time spent on the solved ones, and the largest
    peak memory of one instance's worker (— for rows written before it was recorded)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "vnncomp":
            groups[(r["suite"], r["method"])].append(r)
    if not groups:
        return None
    out = []
    for (suite, method), rs in sorted(groups.items()):
        solved = [r for r in rs if r["result"] in ("sat", "unsat")]
        known = [r for r in solved if r.get("expected") in ("sat", "unsat")]
        correct = sum(r["result"] == r["expected"] for r in known)
        out.append((suite, method, str(len(rs)), str(len(solved)),
                    str(sum(r["result"] == "unsat" for r in rs)),
                    str(sum(r["result"] == "sat" for r in rs)), str(correct),
                    str(len(known) - correct), str(len(rs) - len(solved)),
                    str(sum(r["result"] == "error" for r in rs)),
                    f"{sum(r['time_s'] for r in solved):.1f}", _peak(rs)))
    return Table("VNN-COMP", ("benchmark", "method", "instances", "solved", "unsat", "sat",
                              "correct", "wrong", "unsolved", "errors", "time on solved (s)",
                              "peak memory (MiB)"),
                 tuple(out))


def _peak(rows: list[dict]) -> str:
    peaks = [r["peak_mb"] for r in rows if isinstance(r.get("peak_mb"), (int, float))]
    return f"{max(peaks):.0f}" if peaks else "—"


def _group(r: dict) -> str:
    return f"{r['suite']}/{r['model']}" if r.get("kind") == "robustness" else r["suite"]


def leaderboard(rows: list[dict]) -> Table | None:
    """Per (benchmark or suite/model, method), ranked by decided instances (verified +
    falsified; wrong answers count against), then by time on them."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("method") != "pgd":
            groups[(_group(r), r["method"])].append(r)
    if not groups:
        return None
    scored = []
    for (group, method), rs in groups.items():
        solved = [r for r in rs if r["verdict"] in SOLVED]
        wrong = sum(1 for r in solved if r.get("expected") in ("sat", "unsat")
                    and r.get("result") != r["expected"])
        t = sum(r["time_s"] for r in solved)
        scored.append((group, len(solved) - 2 * wrong, -t, method, rs, solved, wrong, t))
    scored.sort(key=lambda s: (s[0], -s[1], -s[2]))
    out, rank, last = [], 0, None
    for group, _score, _t, method, rs, solved, wrong, t in scored:
        rank = 1 if group != last else rank + 1
        last = group
        out.append((group, str(rank), method, str(len(rs)), str(len(solved)),
                    str(sum(r["verdict"] == "verified" for r in rs)),
                    str(sum(r["verdict"] == "falsified" for r in rs)), str(wrong),
                    f"{t:.2f}"))
    return Table("Leaderboard", ("benchmark", "rank", "method", "instances", "decided",
                                 "verified", "falsified", "wrong", "time on decided (s)"),
                 tuple(out))


def tables(rows: list[dict]) -> list[Table]:
    """Every table of the report, computed from the rows alone."""
    return [t for t in (leaderboard(rows), certified_table(rows), vnncomp_table(rows)) if t]


# -- plots ----------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_certified(rows: list[dict], model: str) -> bytes:
    """Certified accuracy against ε per method for ``model`` (PGD: its upper bound, dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    per: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("kind") == "robustness" and r["model"] == model:
            per[r["method"]][r["eps"]].append(r)
    for method, by_eps in sorted(per.items()):
        eps = sorted(by_eps)
        if method == "pgd":
            ys = [sum(r["verdict"] != "falsified" for r in by_eps[e]) / len(by_eps[e]) for e in eps]
            ax.plot(eps, ys, "k--", label="PGD upper bound")
        else:
            ys = [sum(r["verdict"] == "verified" for r in by_eps[e]) / len(by_eps[e]) for e in eps]
            ax.plot(eps, ys, marker="o", label=method)
    ax.set(xlabel="eps", ylabel="certified accuracy", title=f"{model}: certified accuracy",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    return _png(fig)


def plot_cactus(rows: list[dict], group: str) -> bytes:
    """Instances decided within t seconds against t, per method (a cactus plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    per: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if _group(r) == group and r.get("method") != "pgd":
            per.setdefault(r["method"], [])
            if r["verdict"] in SOLVED:
                per[r["method"]].append(max(r["time_s"], 1e-4))
    for method, times in sorted(per.items()):
        ts = sorted(times)
        ax.step(ts, range(1, len(ts) + 1), where="post", label=f"{method} ({len(ts)})")
    ax.set(xscale="log", xlabel="time per instance (s)", ylabel="instances decided",
           title=f"{group}: cactus plot")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_times(rows: list[dict], group: str) -> bytes:
    """Time of every instance, per method (one dot each; log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({r["method"] for r in rows if _group(r) == group})
    for i, m in enumerate(methods):
        ts = [max(r["time_s"], 1e-4) for r in rows if _group(r) == group and r["method"] == m]
        jitter = [i + 0.3 * (((k * 0.618) % 1) - 0.5) for k in range(len(ts))]
        ax.scatter(jitter, ts, s=8, alpha=0.6)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set(yscale="log", ylabel="time (s)", title=f"{group}: time per instance")
    return _png(fig)


def plots(rows: list[dict]) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG bytes) of every plot."""
    out = []
    for model in sorted({r["model"] for r in rows if r.get("kind") == "robustness"}):
        out.append((f"certified_{_slug(model)}.png", f"{model}: certified accuracy vs eps",
                    plot_certified(rows, model)))
    for group in sorted({_group(r) for r in rows}):
        out.append((f"cactus_{_slug(group)}.png", f"{group}: cactus plot", plot_cactus(rows, group)))
        out.append((f"times_{_slug(group)}.png", f"{group}: time per instance",
                    plot_times(rows, group)))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# -- writing --------------------------------------------------------------------------------
def write_report(rows: list[dict], out_dir: str | os.PathLike, title: str = "nncert report",
                 sources: Iterable[str] = ()) -> tuple[Path, Path]:
    """Write ``report.md`` (tables, plots as PNG files beside it) and ``report.html`` (the same,
    plots embedded) into ``out_dir``; return both paths."""
    if not rows:
        raise DataError("the results hold no rows: nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts, figs = tables(rows), plots(rows)
    for name, _cap, png in figs:
        with open_output(out / name, "wb") as f:
            f.write(png)
    src = ", ".join(sources)
    md = [f"# {title}", "", f"{len(rows)} rows from {src}." if src else f"{len(rows)} rows.", ""]
    md += [t.markdown() for t in ts]
    md += ["## Plots", ""] + [f"![{cap}]({name})\n" for name, cap, _png in figs]
    write_atomic(out / "report.md", "\n".join(md))
    write_atomic(out / "report.html", _html(title, ts, figs, md[2]))
    return out / "report.md", out / "report.html"


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}")


def _html(title: str, ts: list[Table], figs: list[tuple[str, str, bytes]], intro: str) -> str:
    imgs = "".join(
        f"<figure><img alt=\"{html.escape(cap)}\" src=\"data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}\"><figcaption>{html.escape(cap)}</figcaption>"
        "</figure>" for _n, cap, png in figs)
    body = "".join(t.html() for t in ts)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(intro)}</p>{body}<h2>Plots</h2>{imgs}</body></html>\n")


__all__ = ["Table", "certified_table", "leaderboard", "load_rows", "parse_peer", "peer_rows",
           "plots", "tables", "vnncomp_table", "write_report"]
