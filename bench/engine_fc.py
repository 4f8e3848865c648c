"""The engine as one Function Compute instance: what `cpu`, `memorySize` and `instanceConcurrency` in s.yaml
come from, what 1,000 images cost in FC compute units, and how FC scales out for a day's backlog.

Throughput with 1 and 2 threads, peak memory, cost per 1,000 images and scale-out on paper, each against the
1-thread figure of the same run: bench/README.md ("engine_fc.py"). Needs the models (`make models`).
Run: `python bench/engine_fc.py [--quick] [--json]`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(__file__))
from _common import Row, child_env, emit, log, parse_args

SIDE = 1024
ACTIONS = ("SegmentCommonImage", "SegmentBody")
CU_PER_VCPU_SECOND = 1.0
CU_PER_GB_SECOND = 0.15
CU_PER_INVOCATION = 75 / 10_000
USD_PER_CU = 0.000020  # tier 1, international site; the CNY price for cn-shanghai is not confirmed
S_YAML_CPU = 2.0  # what s.yaml gives the engine (vCPU); the CU figures are for that instance size
S_YAML_MEMORY_GB = 4.0
BACKLOG = 100_000
BACKLOG_SECONDS = 3600
API_QPS = 2.0

CHILD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from segflow_engine import actions
from segflow_engine.segmenters.base import get_segmenter
from tests.support.composites import person_composite

action, threads, count, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
actions.warm_up()
get_segmenter("pose_person")
warm = time.perf_counter() - t0
base = np.ascontiguousarray(person_composite("paper", size=side, scale=side / 512).image)

def one(i):
    image = base.copy()
    image[0, i % side, 0] ^= (i % 255) + 1
    actions.run_image_action(action, {}, image, {})

one(10_000)  # the first call of each model pays for lazy set-up
t0 = time.perf_counter()
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(one, range(count)))
seconds = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print("RESULT " + json.dumps({"images_per_second": count / seconds, "peak_mib": hwm, "warm_seconds": warm}))
"""


def measure(action: str, threads: int, count: int) -> dict[str, float]:
    log(f"engine_fc: {action}, {threads} thread(s), {count} images at {SIDE}²")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, action, str(threads), str(count), str(SIDE)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
        timeout=1800,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{action} × {threads}: exit {done.returncode}\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
    return result


def cu_per_image(seconds: float, cpu: float, memory_gb: float) -> float:
    """FC 3.0 CU of one image on an instance of `cpu` vCPU and `memory_gb` GB busy `seconds` with it."""
    return seconds * (cpu * CU_PER_VCPU_SECOND + memory_gb * CU_PER_GB_SECOND) + CU_PER_INVOCATION


def figures(action: str, one: dict[str, float], two: dict[str, float]) -> list[Row]:
    best = max(one["images_per_second"], two["images_per_second"])
    seconds = 1 / best
    cu_1000 = 1000 * cu_per_image(seconds, S_YAML_CPU, S_YAML_MEMORY_GB)
    instances = math.ceil(BACKLOG / BACKLOG_SECONDS / best)
    formula = (
        f"1000 × (t × ({S_YAML_CPU:g} vCPU × {CU_PER_VCPU_SECOND:g} + {S_YAML_MEMORY_GB:g} GB × "
        f"{CU_PER_GB_SECOND:g}) + {CU_PER_INVOCATION:g}), t = {seconds:.2f} s per image"
    )
    return [
        Row(
            f"{action} images/s, one instance, 1 thread",
            f"{one['images_per_second']:.2f}",
            "",
            None,
            f"models loaded in {one['warm_seconds']:.1f} s (FC allows 120 s to listen, 300 s to initialize)",
        ),
        Row(
            f"{action} images/s, one instance, 2 threads",
            f"{two['images_per_second']:.2f} ({two['images_per_second'] / one['images_per_second']:.2f}×)",
            "",
            None,
            "what instanceConcurrency 2 gains over 1 on 2 vCPU",
        ),
        Row(
            f"{action} peak memory of the instance",
            f"{max(one['peak_mib'], two['peak_mib']):.0f} MiB",
            f"< memorySize {S_YAML_MEMORY_GB * 1024:.0f} MiB",
            max(one["peak_mib"], two["peak_mib"]) < S_YAML_MEMORY_GB * 1024,
        ),
        Row(
            f"{action} cost per 1,000 images on FC",
            f"{cu_1000:.0f} CU (≈ USD {cu_1000 * USD_PER_CU:.3f} at tier 1)",
            "",
            None,
            f"{formula}; the API: 1000 × P, P its per-call price (not confirmed here); the functions' own "
            "invocations cost the same either way",
        ),
        Row(
            f"{action} {BACKLOG:,} images in {BACKLOG_SECONDS // 3600} h",
            f"{instances} instances, {BACKLOG / 1000 * cu_1000:,.0f} CU",
            "",
            None,
            f"{BACKLOG / BACKLOG_SECONDS:.1f} images/s ÷ {best:.2f} per instance; through the API at its "
            f"default {API_QPS:g} QPS the same backlog takes {BACKLOG / API_QPS / 3600:.1f} h",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv)
    count = 4 if args.quick else 12
    rows: list[Row] = []
    for action in ACTIONS:
        results = [measure(action, threads, count) for threads in (1, 2)]
        rows += figures(action, *results)
    emit(rows, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
