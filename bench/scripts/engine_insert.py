#!/usr/bin/env python3
"""The engine's own file insert, for the front benchmark: a fresh chdb
engine in this process (its own temporary data directory), the DDL given,
then `INSERT ... FROM INFILE` of the file given, timed; and the engine's own
time for `SELECT 1`. Prints one JSON object:
{"rows": N, "seconds": S, "select_one_ms": [p50, p99]}.

  engine_insert.py --ddl FILE --table events --columns 'a, b' \
      --format RowBinaryWithNamesAndTypes --data FILE [--repeats N]
"""

import argparse
import json
import shutil
import tempfile
import time

import chdb


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ddl", required=True, help="file of ';'-separated statements")
    ap.add_argument("--table", required=True)
    ap.add_argument("--columns", required=True)
    ap.add_argument("--format", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--select-one", type=int, default=1000, help="SELECT 1 queries timed")
    args = ap.parse_args()
    statements = [s.strip() for s in open(args.ddl).read().split(";") if s.strip()]
    best, ms = [], []
    for _ in range(args.repeats):
        path = tempfile.mkdtemp(prefix="engine-insert-")
        try:
            conn = chdb.connect(path)
            for s in statements:
                conn.query(s)
            started = time.perf_counter()
            conn.query(f"INSERT INTO {args.table} ({args.columns}) FROM INFILE '{args.data}' FORMAT {args.format}")
            seconds = time.perf_counter() - started
            rows = int(conn.query(f"SELECT count() FROM {args.table}", "CSV").bytes().strip())
            best.append((seconds, rows))
            if not ms:
                for _ in range(args.select_one):
                    t = time.perf_counter()
                    conn.query("SELECT 1", "TabSeparated")
                    ms.append((time.perf_counter() - t) * 1e3)
            conn.close()
        finally:
            shutil.rmtree(path, ignore_errors=True)
    seconds, rows = sorted(best)[len(best) // 2]
    ms.sort()
    pct = [ms[min(len(ms) - 1, int(len(ms) * q))] for q in (0.5, 0.99)] if ms else [0, 0]
    print(json.dumps({"rows": rows, "seconds": seconds, "select_one_ms": pct}))


if __name__ == "__main__":
    main()
