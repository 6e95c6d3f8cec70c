#!/usr/bin/env python3
"""Build the forgetting example's models: a base and two continually pre-trained descendants.

    python scripts/make_forgetting_models.py                        # examples/forgetting_models/, size small
    python scripts/make_forgetting_models.py --size tiny --out /tmp/fm

Trains on CPU from the bundled demo and lm-eval task data (nothing is downloaded); cached:
a second run with the same size returns at once. See evomerge.demo.forgetting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evomerge.demo.forgetting import SIZES, build_forgetting_models

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "examples" / "forgetting_models")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    models = build_forgetting_models(args.out, size=args.size, progress=True)
    print(
        json.dumps(
            {
                "base": str(models.base),
                "descendants": {k: str(v) for k, v in models.descendants.items()},
                "final_loss": models.manifest["final_loss"],
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
