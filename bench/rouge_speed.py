"""Time evalsvc's ROUGE (evalsvc.checks.fast_rouge) against Google's rouge-score on the same pairs.

Builds ``--pairs`` (prediction, reference) pairs deterministically from ``--seed``: references of 10-60
words drawn Zipf-like from a fixed vocabulary of inflected English words (about half of them 2-4
sentences on separate lines, as rougeLsum expects), predictions edited from them (words kept, swapped for an
inflection or another word, dropped, inserted; sentences sometimes reordered). Scores rouge1, rouge2,
rougeL and rougeLsum with and without the stemmer four ways: rouge-score's ``RougeScorer.score`` in
one process, ``fast_rouge.score_many`` in one process, the same with its C core switched off (the pure-Python
counting that an install without a C compiler gets), and ``score_many`` with a process pool. Every
precision, recall and F must be equal to rouge-score's, or the script exits 1. The stem caches are
cleared before every timed run, so each run pays its own stemming. Wall-clock and CPU seconds are
both the fastest of ``--repeat`` runs; on a shared machine CPU seconds are the steadier measure of the
algorithm, wall-clock the only measure of the pool (whose CPU seconds add up all its processes).

    python bench/rouge_speed.py --pairs 10000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable

from rouge_score import rouge_scorer

from evalsvc.checks import fast_rouge

TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# Function words first: with Zipf weights they are the most frequent, as in news text.
_VOCAB = (
    "the of to and a in that for on with as by at from after over about this their its more than new "
    "3 12 40 2024 1,500 000 per cent million billion Monday Tuesday first last local major national "
    "report reports reported reporting market markets price prices priced pricing company companies "
    "government governments official officials police storm storms power powered homes home school schools "
    "student students water city cities court courts minister ministers vote votes voted voting election "
    "elections plan plans planned planning budget budgets worker workers union unions strike strikes striking "
    "hospital hospitals doctor doctors patient patients study studies studied research researchers team teams "
    "player players season seasons coach coaches club clubs road roads bridge bridges train trains flight "
    "flights airport passengers energy climate farmer farmers crop crops drought floods flooded fire fires "
    "village villages family families child children parent parents teacher teachers law laws rule rules "
    "ruled ruling bank banks rate rates loan loans tax taxes taxed profit profits share shares investor "
    "investors deal deals talks leader leaders party parties protest protests protested crowd crowds border "
    "borders trade traded trading export exports factory factories job jobs phone phones data user users "
    "privacy say says said rise rises rose rising fall falls fell falling cut cuts cutting close closes closed "
    "closing open opens opened opening warn warns warned warning start starts started end ends ended reach "
    "reached agree agreed agreement reject rejects rejected approve approved approval delay delays delayed "
    "announce announced announcement expect expects expected expectation"
).split()


def _vocabulary() -> list[str]:
    return list(dict.fromkeys(_VOCAB))


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """(prediction, reference) pairs; the same n and seed give the same pairs on any machine."""
    rng = random.Random(seed)
    vocab = _vocabulary()
    weights = [1 / (k + 1) ** 0.8 for k in range(len(vocab))]  # Zipf-like
    pairs = []
    for _ in range(n):
        length = rng.randint(10, 60)
        n_sents = rng.choice((1, 1, 2, 3, 4)) if length >= 20 else 1
        cuts = sorted(rng.sample(range(3, length - 2), n_sents - 1)) if n_sents > 1 else []
        words = rng.choices(vocab, weights, k=length)
        ref_sents = [words[a:b] for a, b in zip([0, *cuts], [*cuts, length], strict=True)]
        keep = rng.uniform(0.3, 0.95)
        pred_sents = []
        for sent in ref_sents:
            out = []
            for w in sent:
                r = rng.random()
                if r < keep:
                    out.append(w)
                elif r < keep + (1 - keep) / 3:
                    out.append(rng.choice([v for v in vocab if v[:4] == w[:4]] or [w]))  # an inflection
                elif r < keep + 2 * (1 - keep) / 3:
                    out.append(rng.choices(vocab, weights)[0])
                if rng.random() < 0.05:
                    out.append(rng.choices(vocab, weights)[0])
            pred_sents.append(out or [rng.choice(vocab)])
        if len(pred_sents) > 1 and rng.random() < 0.3:
            rng.shuffle(pred_sents)
        sep = "\n" if n_sents > 1 else " "
        pairs.append((_text(pred_sents, sep), _text(ref_sents, sep)))
    return pairs


def _text(sents: list[list[str]], sep: str) -> str:
    return sep.join(" ".join(s).capitalize() + "." for s in sents)


def _cpu() -> float:
    t = os.times()  # this process and its finished children (a pool's workers, once it is shut down)
    return t.user + t.system + t.children_user + t.children_system


def _pure_python(pairs: list[tuple[str, str]], stem: bool, types: tuple[str, ...] = TYPES) -> list[dict]:
    """``score_many`` counting in Python, as without the C extension."""
    core, fast_rouge._rouge_core = fast_rouge._rouge_core, None
    try:
        return fast_rouge.score_many(pairs, types, stem)
    finally:
        fast_rouge._rouge_core = core


def _ratio(base: float, t: float) -> str:
    return f"{base / t:.1f}x" if t > 0 else "- (under the clock's 10 ms)"


def _timed(runs: list[Callable[[], list[dict]]], repeat: int) -> list[tuple[float, float, list[dict]]]:
    """Fastest wall-clock and CPU seconds of each run over ``repeat`` rounds, and its scores.

    The rounds interleave the runs, so a burst of load from other processes does not favour one of them.
    """
    best = [(float("inf"), float("inf"), [])] * len(runs)
    for _ in range(repeat):
        for k, fn in enumerate(runs):
            fast_rouge._STEMS.clear()
            t0, c0 = time.perf_counter(), _cpu()
            out = fn()
            best[k] = (min(best[k][0], time.perf_counter() - t0), min(best[k][1], _cpu() - c0), out)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000, help="number of (prediction, reference) pairs (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated pairs (default 0)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="pool size for the parallel run (default: all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of timing; each way's fastest is kept (default 3)")
    ap.add_argument("--per-type", action="store_true", help="also time each ROUGE type alone (no stemmer, 1 process)")
    args = ap.parse_args()
    if fast_rouge._rouge_core is None:
        print("evalsvc/checks/_rouge_core.c is not built (pip install -e . needs a C compiler): "
              "the 'fast_rouge' rows count in Python", file=sys.stderr)
    pairs = make_pairs(args.pairs, args.seed)
    n_tokens = sum(len(fast_rouge.tokenize(p)) + len(fast_rouge.tokenize(r)) for p, r in pairs) / len(pairs)
    multi = sum("\n" in r for _, r in pairs) / len(pairs)
    print(f"{len(pairs)} pairs, {n_tokens:.1f} tokens per pair, {multi:.0%} multi-sentence, types {', '.join(TYPES)}, "
          f"{os.cpu_count()} cores\n")
    print("| stemmer | implementation | wall s | CPU s | pairs/s (wall) | speed-up (wall) | speed-up (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    identical = True
    for stem in (False, True):
        scorer = rouge_scorer.RougeScorer(list(TYPES), use_stemmer=stem)
        runs = [("rouge-score 0.1.2, 1 process", lambda s=scorer: [s.score(r, p) for p, r in pairs]),
                ("fast_rouge, 1 process", lambda st=stem: fast_rouge.score_many(pairs, TYPES, st)),
                ("fast_rouge without its C core, 1 process", lambda st=stem: _pure_python(pairs, st)),
                (f"fast_rouge, {args.processes} processes",
                 lambda st=stem: fast_rouge.score_many(pairs, TYPES, st, processes=args.processes))]
        timed = [(name, *t) for (name, _), t in zip(runs, _timed([fn for _, fn in runs], args.repeat), strict=True)]
        want = timed[0][3]
        for *_, got in timed[1:]:
            identical &= all(tuple(w[t]) == tuple(g[t]) for w, g in zip(want, got, strict=True) for t in TYPES)
        for k, (name, wall, cpu, _) in enumerate(timed):
            cpu_up = _ratio(timed[0][2], cpu) if k < 3 else "(total of all processes)"
            print(f"| {'yes' if stem else 'no'} | {name} | {wall:.2f} | {cpu:.2f} | {len(pairs) / wall:,.0f} "
                  f"| {timed[0][1] / wall:.1f}x | {cpu_up} |")
    if args.per_type:
        print("\n| type alone (no stemmer) | rouge-score CPU s | fast_rouge CPU s | speed-up (CPU) "
              "| without C core CPU s | speed-up (CPU) |")
        print("|---|---:|---:|---:|---:|---:|")
        for t in TYPES:
            scorer = rouge_scorer.RougeScorer([t])
            (_, ref_cpu, want), (_, cpu, got), (_, py_cpu, py_got) = _timed(
                [lambda s=scorer: [s.score(r, p) for p, r in pairs], lambda t=t: fast_rouge.score_many(pairs, [t]),
                 lambda t=t: _pure_python(pairs, False, (t,))], args.repeat)
            identical &= all(tuple(w[t]) == tuple(g[t]) == tuple(h[t]) for w, g, h in zip(want, got, py_got, strict=True))
            print(f"| {t} | {ref_cpu:.2f} | {cpu:.2f} | {_ratio(ref_cpu, cpu)} | {py_cpu:.2f} | {_ratio(ref_cpu, py_cpu)} |")
    print(f"\nall precision, recall and F identical to rouge-score: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
