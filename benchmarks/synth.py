"""Synthetic data in the Kaggle Steam Reviews schema, for benchmarks.

``generate_steam_csv(path, rows, seed)`` writes app_id, app_name, review_text, review_score,
review_votes with the real file's quirks: a length mix from a word to ~1,500 words (long tail),
82% positive, ♥ profanity masks, "Early Access Review" placeholders, blanks, bad scores,
duplicates, quoted commas, doubled quotes and embedded \\n / \\r\\n newlines, non-Latin text.
Words come from the packaged MiniLM tokenizer vocabulary (real English word pieces).
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import numpy as np

HEADER = ("app_id", "app_name", "review_text", "review_score", "review_votes")
POSITIVE_RATE = 0.82
_EXTRA = ["♥♥♥♥", "♥♥ ♥♥♥", "très", "bien", "игра", "супер", "好玩", "🎮", "10/10", "gg"]


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Whole words (no ## pieces, no [special]) from the packaged tokenizer's vocab."""
    try:
        from steam_ray.config import OFFLINE_MODEL_NAME, resolve_model

        vocab_file = Path(resolve_model(OFFLINE_MODEL_NAME)) / "vocab.txt"
        words = [w for w in vocab_file.read_text().split("\n") if w.isalpha() and len(w) > 1]
    except OSError:
        words = []
    if len(words) < 1000:
        words = [
            "the",
            "game",
            "is",
            "fun",
            "good",
            "bad",
            "play",
            "story",
            "graphics",
            "buy",
            "worth",
            "hours",
            "great",
        ]
    return tuple(words)


def review_lengths(rows: int, seed: int) -> np.ndarray:
    """Words per review: 20% short, a lognormal body (median ~25), a 1.5% tail of 200-1,500."""
    rng = np.random.default_rng(seed)
    kind = rng.random(rows)
    body = rng.lognormal(mean=3.2, sigma=1.0, size=rows)
    short = rng.integers(1, 8, size=rows)
    long = rng.integers(200, 1500, size=rows)
    out = np.where(kind < 0.2, short, np.where(kind > 0.985, long, body))
    return np.clip(out, 1, 1500).astype(np.int64)


def _rows(rows: int, seed: int, start: int) -> list[tuple[str, str, str, str, str]]:
    rng = np.random.default_rng([seed, start])
    words = np.array(vocabulary() + tuple(_EXTRA), dtype=object)
    lengths = review_lengths(rows, seed + start)
    word_ids = rng.integers(0, len(words), size=int(lengths.sum()))
    apps = rng.zipf(1.3, size=rows) % 5000 + 10
    kinds = rng.random(rows)
    scores = np.where(rng.random(rows) < POSITIVE_RATE, "1", "-1")
    quirks = rng.random(rows)
    out: list[tuple[str, str, str, str, str]] = []
    pos = 0
    prev: list[tuple[str, str, str, str, str]] = []
    for i in range(rows):
        n = int(lengths[i])
        text = " ".join(words[word_ids[pos : pos + n]])
        pos += n
        q = quirks[i]
        if q < 0.05:
            text = text.replace(" ", ", ", 2)
        elif q < 0.07:
            text = f'He said "{text}" twice'
        elif q < 0.09:
            text = text.replace(" ", "\n", 1)
        elif q < 0.10:
            text = text.replace(" ", "\r\n", 1)
        score = str(scores[i])
        k = kinds[i]
        if k < 0.03:
            text = "Early Access Review"
        elif k < 0.04:
            text = " " if k < 0.035 else ""
        elif k < 0.045:
            score = "0" if k < 0.0425 else ""
        app = str(int(apps[i]))
        row = (app, f"Game {app}", text, score, str(int(rng.integers(0, 3))))
        if k > 0.98 and prev:  # an exact repeat of a recent review
            row = prev[int(rng.integers(0, len(prev)))]
        out.append(row)
        if len(prev) < 64:
            prev.append(row)
        else:
            prev[i % 64] = row
    return out


def generate_steam_csv(path: str | Path, rows: int, seed: int = 0, chunk: int = 50_000) -> None:
    """Write ``rows`` synthetic Steam reviews to ``path`` (CSV with a header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for start in range(0, rows, chunk):
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(
                _rows(min(chunk, rows - start), seed, start)
            )
            f.write(buf.getvalue())


if __name__ == "__main__":
    import sys

    generate_steam_csv(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
