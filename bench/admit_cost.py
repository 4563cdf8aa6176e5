"""The in-process cost of one review: parsing and `admit()` with the shipped policies, no HTTP, no TLS.

    .venv/bin/python bench/admit_cost.py [--rounds 7] [--cel-engine builtin] [--profile]

Each round sends every body of the review mix (`reviews.review_mix`, the 200 reviews of bench/throughput.py) through
`parse_review` and `admit()`, /validate then /mutate, and times each one; the figures are the per-review median and
mean of the best round (the least disturbed by other work on the machine). `--profile` then runs cProfile over
five rounds and prints where the time goes by source file (generated CEL functions counted together as `<cel>`)
and the functions with the most time of their own. The issue "A CEL runtime of our own" asks for a median of at
most 150 us for /validate; nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import reviews  # noqa: E402

from webhook.admission import admit  # noqa: E402
from webhook.policies.cel import make_engine  # noqa: E402
from webhook.policies.loader import load_policy_set  # noqa: E402
from webhook.reviews import parse_review  # noqa: E402


def measure(engine: str, rounds: int) -> dict[str, dict[str, float]]:
    policy_set = load_policy_set(ROOT / "policies", engine=make_engine(engine))
    bodies = [review.body for review in reviews.review_mix()]
    gc.set_threshold(10_000)  # as `webhook serve` (webhook/server.py settle_heap)
    results = {}
    for phase in ("validate", "mutate"):
        best: tuple[float, float] | None = None
        for round_number in range(rounds + 1):
            times = []
            for body in bodies:
                start = time.perf_counter()
                parsed, raw = parse_review(body)
                admit(policy_set, parsed.request, raw, phase=phase)  # type: ignore[arg-type]
                times.append(time.perf_counter() - start)
            if round_number == 0:
                continue  # warm-up: caches, first allocations
            figures = (statistics.median(times), statistics.fmean(times))
            best = figures if best is None or figures[0] < best[0] else best
        assert best is not None
        results[phase] = {"median_us": round(best[0] * 1e6, 1), "mean_us": round(best[1] * 1e6, 1)}
        print(f"  /{phase}: median {best[0] * 1e6:.1f} us, mean {best[1] * 1e6:.1f} us per review", flush=True)
    return results


def profile(engine: str) -> None:
    policy_set = load_policy_set(ROOT / "policies", engine=make_engine(engine))
    bodies = [review.body for review in reviews.review_mix()]

    def run() -> None:
        for _ in range(5):
            for body in bodies:
                parsed, raw = parse_review(body)
                admit(policy_set, parsed.request, raw, phase="validate")

    run()
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_file: Counter[str] = Counter()
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        name = "<cel>" if filename.startswith("<cel") else filename.replace(str(ROOT) + "/", "")
        by_file[name] += row[2]
    total = sum(by_file.values())
    print("  /validate, share of the time by source file (cProfile; its overhead inflates call-heavy code):")
    for name, seconds in by_file.most_common(12):
        print(f"    {seconds / total * 100:5.1f}%  {name}")
    stats.sort_stats("tottime").print_stats(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds over the mix (7)")
    parser.add_argument("--cel-engine", default="builtin", choices=("builtin", "cel-expr-python", "cel-python"))
    parser.add_argument("--profile", action="store_true", help="then profile /validate with cProfile")
    arguments = parser.parse_args()
    print(f"in-process cost per review (the review mix, shipped policies, {arguments.cel_engine}):")
    results = measure(arguments.cel_engine, arguments.rounds)
    if arguments.profile:
        profile(arguments.cel_engine)
    print(json.dumps({"engine": arguments.cel_engine, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
