"""Throughput of the diff engine on one core.

Measures ``DiffComparator.compare`` end to end -- lifting (orjson parsing),
the structural diff with rules, noise subtraction and the verdict -- on:

* ~1 KB title bodies that differ in their volatile fields (request id,
  generated-at), a rating off by float formatting noise and an images list
  in another order (ignore x2, list matched by key, numeric tolerance);
* the same with one real difference (a MISMATCH, so samples are redacted);
* byte-equal ~1 KB bodies (the fast path);
* ~1 KB bodies holding a boolean (no whole-subtree == shortcut);
* ~100 KB list bodies with the same rules.

    .venv/bin/python bench/diff_bench.py            # print the figures
    .venv/bin/python bench/diff_bench.py --check    # exit 1 below 20,000/s for 1 KB
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.exchange import Exchange, ShadowPair
from strangler_proxy.diff.result import Verdict

TARGET_PER_S_1KB = 20_000
JSON_HEADERS = (("Content-Type", "application/json; charset=utf-8"), ("Content-Length", "0"))

RULES = CompareConfig(
    ignore=("$..request_id", "$..generated_at"),
    list_keys={"$.images": "id"},
    abs_tolerance=1e-6,
)
RULES_100K = CompareConfig(
    ignore=("$..request_id", "$..generated_at"),
    list_keys={"$.items[*].images": "id"},
    abs_tolerance=1e-6,
)


def _title(rng: random.Random, n: int, images: int) -> dict[str, Any]:
    return {
        "id": f"tt{n:07d}",
        "primary_title": f"The Film Number {n}",
        "original_title": f"Le Film Numéro {n}",
        "kind": "movie",
        "start_year": 1950 + n % 70,
        "end_year": None,
        "runtime_minutes": 80 + n % 60,
        "genres": ["Drama", "Comedy"],
        "rating": {"average_rating": round(rng.uniform(1, 10), 6), "num_votes": rng.randint(1, 10**6)},
        "images": [
            {"id": f"rm{n * 10 + i:07d}", "url": f"https://img.example/{n}/{i}.jpg", "width": 640, "height": 480,
             "caption": f"Still {i} of film {n}"}
            for i in range(images)
        ],
    }


def _volatile(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**doc, "generated_at": f"2024-05-01T12:{rng.randint(0, 59):02d}:00Z", "request_id": f"{rng.getrandbits(64):016x}"}


def _candidate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Same answer, different noise: shuffled images, float formatting drift."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    imgs = list(out["images"])
    rng.shuffle(imgs)
    out["images"] = imgs
    out["rating"]["average_rating"] += 1e-9
    return out


def _pair(leg: bytes, cand: bytes) -> ShadowPair:
    return ShadowPair(
        key="titles",
        mode="shadow",
        served_by="legacy",
        legacy=Exchange("legacy", "GET", "/api/titles/tt1", status=200, response_headers=JSON_HEADERS, body=leg),
        candidate=Exchange("target", "GET", "/api/titles/tt1", status=200, response_headers=JSON_HEADERS, body=cand),
    )


def _rate(fn: Callable[[], object], min_seconds: float = 1.0) -> float:
    # CPU time of this process: "per second of one core", and not skewed when
    # other work shares the machine.
    n, start = 0, time.process_time()
    while True:
        for _ in range(200):
            fn()
        n += 200
        elapsed = time.process_time() - start
        if elapsed >= min_seconds:
            return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_PER_S_1KB}/s for 1 KB")
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    rng = random.Random(7)
    comparator = DiffComparator()

    pairs_1k = []
    for n in range(50):
        doc = _title(rng, n, images=6)
        pairs_1k.append(_pair(orjson.dumps(_volatile(doc, rng)), orjson.dumps(_volatile(_candidate(doc, rng), rng))))
    size_1k = sum(len(p.legacy.body) for p in pairs_1k) / len(pairs_1k)
    mism = []
    for n in range(50):
        doc = _title(rng, n, images=6)
        bad = _volatile(_candidate(doc, rng), rng)
        bad["runtime_minutes"] = 1
        mism.append(_pair(orjson.dumps(_volatile(doc, rng)), orjson.dumps(bad)))
    same = [_pair(p.legacy.body, p.legacy.body) for p in pairs_1k]
    # A boolean anywhere disables whole-subtree == shortcuts (True == 1 in Python).
    with_bools = []
    for n in range(50):
        doc = {**_title(rng, n, images=6), "adult": False}
        with_bools.append(_pair(orjson.dumps(_volatile(doc, rng)), orjson.dumps(_volatile(_candidate(doc, rng), rng))))

    big_doc: dict[str, Any] = {"items": [_title(rng, n, images=2) for n in range(210)], "total": 210, "limit": 210, "offset": 0}
    big_cand = {**big_doc, "items": [_candidate(t, rng) for t in big_doc["items"]]}
    big = _pair(orjson.dumps(_volatile(big_doc, rng)), orjson.dumps(_volatile(big_cand, rng)))

    for p in pairs_1k + same + with_bools:
        assert comparator.compare(p, RULES).verdict is Verdict.MATCH, comparator.compare(p, RULES)
    for p in mism:
        assert comparator.compare(p, RULES).verdict is Verdict.MISMATCH
    assert comparator.compare(big, RULES_100K).verdict is Verdict.MATCH, comparator.compare(big, RULES_100K).differences

    def cycle(pairs: list[ShadowPair], rules: CompareConfig) -> Callable[[], object]:
        state = {"i": 0}

        def one() -> object:
            i = state["i"] = (state["i"] + 1) % len(pairs)
            return comparator.compare(pairs[i], rules)

        return one

    figures = [
        (f"~{size_1k / 1024:.1f} KB, noisy but equal (MATCH)", _rate(cycle(pairs_1k, RULES), args.seconds)),
        (f"~{size_1k / 1024:.1f} KB, one real difference (MISMATCH)", _rate(cycle(mism, RULES), args.seconds)),
        (f"~{size_1k / 1024:.1f} KB, byte-equal (fast path)", _rate(cycle(same, RULES), args.seconds)),
        (f"~{size_1k / 1024:.1f} KB with a boolean, equal (full walk)", _rate(cycle(with_bools, RULES), args.seconds)),
        (f"~{len(big.legacy.body) / 1024:.0f} KB, noisy but equal (MATCH)", _rate(cycle([big], RULES_100K), args.seconds)),
    ]
    print("diff engine, comparisons per CPU-second of one core (parse + diff + verdict):")
    for label, rate in figures:
        print(f"  {label:<45} {rate:>10,.0f}/s")
    if args.check and figures[0][1] < TARGET_PER_S_1KB:
        print(f"FAIL: {figures[0][1]:,.0f}/s is under the {TARGET_PER_S_1KB:,}/s target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
