"""Plots of a pipeline benchmark run: reads results.json, writes PNGs."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bar(ax, labels, values, lows, highs, title, unit):
    errs = [[v - lo for v, lo in zip(values, lows)], [hi - v for v, hi in zip(values, highs)]]
    ax.bar(range(len(values)), values, yerr=errs, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)


def spread(s):
    return s["median"], s["min"], s["max"]


def main(path, out):
    r = json.loads(Path(path).read_text())
    out = Path(out)
    made = []
    def bars(name, title, labels, rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        bar(ax, labels, *zip(*rows), title, "events/s")
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        made.append(name)

    if "ingest" in r:
        ing = r["ingest"]
        labels = [f"HTTP batch {h['batch']}" for h in ing["http"]] + ["raw rdkafka"]
        rows = [spread(h["events_per_sec"]) for h in ing["http"]] + [spread(ing["raw_events_per_sec"])]
        bars("ingest.png", "Ingest throughput vs raw producer", labels, rows)
    if "consumer" in r:
        c = r["consumer"]
        labels = ["raw RowBinary insert"]
        rows = [spread(c["raw_insert_events_per_sec"])]
        for s in c["scaling"]:
            if "kafka_fetch_ceiling_events_per_sec" in s:
                labels.append(f"fetch only ×{s['partitions']}")
                rows.append(spread(s["kafka_fetch_ceiling_events_per_sec"]))
            labels.append(f"consumer ×{s['consumers']}")
            rows.append(spread(s["events_per_sec"]))
        bars("consumer.png", "Consumer throughput and scaling vs its ceilings", labels, rows)
    if "query" in r:
        # Rows with a latency of their own (the stats paths rows hold two).
        q = [x for x in r["query"]["results"] if "p50_ms" in x]
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [x["query"] for x in q]
        ax.barh(range(len(q)), [x["p50_ms"] for x in q], color="#4c72b0", label="p50")
        ax.barh(range(len(q)), [x["p99_ms"] - x["p50_ms"] for x in q], left=[x["p50_ms"] for x in q],
                color="#dd8452", label="p99")
        ax.set_yticks(range(len(q)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms")
        ax.set_title(f"Query latency, {r['query']['events']:,} events", fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "query.png", dpi=110)
        made.append("query.png")
    print("plots:", ", ".join(made) if made else "none")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS_JSON OUT_DIR")
    main(sys.argv[1], sys.argv[2])
