#!/usr/bin/env python3
"""The forgetting example end to end: models (cached), NSGA-II search, the seed's baselines, report.

    python scripts/run_forgetting.py [--run-dir runs/forgetting] [--trials N] [--size small]

Prints the Pareto front, the baselines and the front points that dominate the equal-weight
Linear merge of the base and its descendants; the report (RUN_DIR/report/report.html)
marks the baselines on the Pareto plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evomerge.demo.forgetting import SIZES, build_forgetting_models
from evomerge.demo.forgetting_run import run_forgetting

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "examples" / "forgetting.yaml")
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "forgetting")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    args = ap.parse_args(argv)
    build_forgetting_models(args.config.parent / "forgetting_models", size=args.size, progress=True)
    result = run_forgetting(
        args.config, args.run_dir, max_trials=args.trials, workers=args.workers, progress=True
    )
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
