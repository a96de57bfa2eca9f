"""``nncert report RESULTS... --out DIR``: Markdown and a self-contained HTML page (plots
embedded, opens offline) from results files of ``nncert bench run``: certified accuracy against
eps per method, cactus plots, time per instance, a leaderboard; ``--peer NAME=results.csv``
adds another tool's VNN-COMP results (the competition's CSV) for the instances it shares."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown + HTML report (tables, plots) of results files",
                       description=__doc__)
    p.add_argument("results", nargs="+", help="results files (.jsonl) of `nncert bench run`")
    p.add_argument("--out", required=True, help="folder to write report.md, report.html and the plots")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=CSV",
                   help="a peer's VNN-COMP results CSV (category,onnx,vnnlib,prepare_time,result,"
                        "run_time), shown as method NAME; repeatable")
    p.add_argument("--title", default="nncert benchmark report", help="the report's title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.report import load_rows, parse_peer, peer_rows, write_report
    from ..utils import check_writable

    check_writable(f"{args.out}/report.html", "--out")
    peers = [parse_peer(s) for s in args.peer]
    rows = load_rows(args.results)
    for name, path in peers:
        rows += peer_rows(name, path, rows)
    md, page = write_report(rows, args.out, args.title, [str(r) for r in args.results])
    print(f"{len(rows)} rows: wrote {md} and {page}")
    return 0
