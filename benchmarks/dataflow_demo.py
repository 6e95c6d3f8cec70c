"""The data-flow demonstration, measured: does a small layer-path search beat its sources?

Builds the layer-split sources (:mod:`evomerge.testing.layer_split`: ``style`` learned the
persona's register in its lower layers, ``facts`` her facts in its upper layers), runs a
real ``dataflow`` search (local Ray, CMA-ES, the hf generator, local judges), exports the
best path as a standard checkpoint and scores the sources and the export with the same
prompts and judges on the search and the held-out prompts
(:func:`evomerge.testing.dataflow_demo.run_dataflow_demo`). The peers are measured in the
same run: the two sources and the start point (the embedding source's own layers, here
``style``). Prints one JSON object: scores, the chosen path, timings, the machine.

    python benchmarks/dataflow_demo.py --run-dir /tmp/dfs [--size full] [--trials 40] [--scales]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from typing import Any

from evomerge.testing.dataflow_demo import run_dataflow_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scales", action="store_true", help="search the transition scales too")
    ap.add_argument("--cache-dir", default=None, help="where the built sources are cached")
    args = ap.parse_args()
    result: dict[str, Any] = run_dataflow_demo(
        args.run_dir,
        size=args.size,
        trials=args.trials,
        workers=args.workers,
        scales=args.scales,
        cache_dir=args.cache_dir,
    )
    result.pop("heldout_samples", None)
    table = result.pop("table")
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(table)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
