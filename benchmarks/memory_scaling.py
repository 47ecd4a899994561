"""Peak memory of ``python -m detect.run`` on a val split and on one 5x larger, in one run.

    python benchmarks/memory_scaling.py                        # demo profile, 1 member, val 100 vs 500
    python benchmarks/memory_scaling.py --val 40 --factor 5 -- profile=tiny   # a smoke run

Each run is a fresh ``python -m detect.run`` process started from a small wrapper
process, whose ``RUSAGE_CHILDREN`` peak RSS is then that run's own peak (the largest
resident set of the run's process; ``proposals.workers=1`` keeps Selective Search in
it).  The training split and its cache are shared, so both runs load the same trained
member; everything that depends on the val split (data generation, proposals, region
scores, ensemble, evaluation) is computed in each.  A pipeline that held every val
region's crops, or all of a split's images, would grow with the split; ours streams
images and regions and keeps only per-region boxes and scores, a few kB per image.

Also printed: the peak of a process that only imports the pipeline (torch, OpenCV,
Hydra), so the growth can be read beside the fixed cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WRAPPER = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode:
    sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-3000:])
    sys.exit(proc.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
"""


def peak_rss_mib(command: list[str]) -> float:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr}")
    return int(proc.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=int, default=100, help="val images of the small run")
    parser.add_argument("--factor", type=int, default=5, help="the large run has factor x --val images")
    parser.add_argument("overrides", nargs="*", default=["profile=demo", "ensemble.size=1"],
                        help="detect.run overrides shared by both runs (default: profile=demo ensemble.size=1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        imports = peak_rss_mib([sys.executable, "-c", "import detect.run, detect.pipeline"])
        results = {}
        for n in (args.val, args.val * args.factor):
            out = Path(tmp) / f"run_{n}"
            # Own data root per size (the generator rewrites a root whose knobs change); the
            # training split is byte-identical in both, so the cached member is shared.
            peak = peak_rss_mib([sys.executable, "-m", "detect.run", *args.overrides, f"cache_dir={tmp}/cache",
                                 f"data.root={tmp}/data_{n}", f"data.splits.val={n}", "proposals.workers=1",
                                 f"hydra.run.dir={out}"])
            metrics = json.loads((out / "metrics.json").read_text())
            results[n] = peak
            print(f"val {n:5d} images: peak RSS {peak:7.1f} MiB; mAP {metrics['mAP']:.4f}; "
                  f"{metrics['proposals']['merged']['per_image']:.0f} regions/image; "
                  f"stages {', '.join(f'{k} {v:.0f}s' for k, v in metrics['timing_s'].items())}", flush=True)
        small, large = results[args.val], results[args.val * args.factor]
        print(f"\noverrides: {' '.join(args.overrides)}")
        print(f"import only: {imports:.1f} MiB")
        print(f"peak RSS {args.factor}x val / 1x val: {large / small:.3f}  "
              f"(growth {large - small:+.1f} MiB for {args.val * (args.factor - 1)} more images)")


if __name__ == "__main__":
    main()
