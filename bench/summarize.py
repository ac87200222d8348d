"""Compact table of a `pytest bench --benchmark-json PATH` run.

One row per benchmark: group, backend, median, TFLOP/s, TB/s, peak memory beyond inputs, GPU
launches per call, the speed-up of each row over every other backend of its group (measured
in the same run), and for the Triton rows at the GPU shapes the H200 prediction written before
the run (bench/predictions.py) with measured / predicted.

    python bench/summarize.py PATH
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import markdown, predictions  # noqa: E402


def predicted_ms(group, backend):
    """The prediction for a benchmark group ("cross-scale train-x2 fwd+bwd") and backend, or None."""
    words = group.split(" ")
    if backend != "triton" or len(words) != 3:
        return None
    operator, shape, direction = words
    return predictions.operator_ms(operator, shape, direction == "fwd+bwd")


def rows(report):
    groups = {}
    for b in report["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    out = []
    for group, members in groups.items():
        medians = {m["params"]["backend"]: m["stats"]["median"] for m in members}
        for m in members:
            info, backend = m["extra_info"], m["params"]["backend"]
            speedups = ", ".join(f"{medians[other] / m['stats']['median']:.2f}x vs {other}"
                                 for other in medians if other != backend)
            out.append({"group": group, "backend": backend, "median_ms": m["stats"]["median"] * 1e3,
                        "tflops": info.get("tflops"), "tbps": info.get("tbps"),
                        "peak_extra_mb": info.get("peak_extra_mb"), "launches": info.get("launches"),
                        "speedups": speedups, "predicted_ms": predicted_ms(group, backend)})
    return out


def format_table(report):
    first = report["benchmarks"][0]["extra_info"] if report["benchmarks"] else {}
    head = (f"{first.get('device')}, torch {first.get('torch')}, Triton {first.get('triton')}, "
            f"{first.get('dtype')}, {report.get('datetime', '')[:10]}")
    cells = [[r["group"], r["backend"], f"{r['median_ms']:.3f}", f"{r['tflops']:.3g}" if r["tflops"] else "-",
              f"{r['tbps']:.3g}" if r["tbps"] else "-",
              f"{r['peak_extra_mb']:.0f}" if r["peak_extra_mb"] is not None else "-",
              r["launches"] if r["launches"] is not None else "-", r["speedups"],
              f"{r['predicted_ms']:.3f}" if r["predicted_ms"] else "-",
              f"{r['median_ms'] / r['predicted_ms']:.2f}" if r["predicted_ms"] else "-"]
             for r in rows(report)]
    return head + "\n\n" + markdown.table(
        ["benchmark", "backend", "median ms", "TFLOP/s", "TB/s", "peak extra MB", "launches", "speed-up",
         "predicted ms (H200)", "measured / predicted"], cells)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/summarize.py BENCH_JSON")
    with open(sys.argv[1]) as f:
        print(format_table(json.load(f)))
