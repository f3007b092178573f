"""Cleaning rules, label mapping, drop reasons and exact dedupe (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from steam_ray.config import SAMPLE_COLUMNS, STEAM_COLUMNS, CleanConfig
from steam_ray.data.clean import Deduper, apply_dedupe, classify, clean_text


def _classify(
    rows: list[tuple[str | None, str | None, str]], **kw: object
) -> list[dict[str, object]]:
    out: list[dict[str, object]] = _classify_table(rows, **kw).to_pylist()
    return out


def _classify_table(rows: list[tuple[str | None, str | None, str]], **kw: object) -> pa.Table:
    table = pa.table(
        {
            "app_id": pa.array([r[2] for r in rows], pa.string()),
            "review_text": pa.array([r[0] for r in rows], pa.string()),
            "review_score": pa.array([r[1] for r in rows], pa.string()),
        }
    )
    args: dict[str, object] = {
        "columns": STEAM_COLUMNS,
        "clean": CleanConfig(),
        "seed": 42,
        "split_by": "group",
        "val_fraction": 0.1,
        "test_fraction": 0.1,
    }
    args.update(kw)
    return classify(table, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("♥♥♥♥ this game", "♥ this game"),
        ("a ♥♥♥ ♥♥ b", "a ♥ b"),  # whitespace-separated runs are one mask
        ("♥ ♥\n♥", "♥"),
        ("x ♥ y ♥♥ z", "x ♥ y ♥ z"),  # separate runs stay separate
        ("  padded\t\n", "padded"),
        ("inner   spaces kept", "inner   spaces kept"),
        ("the and of a", "the and of a"),  # no stopword removal
        ("Привет 🎮", "Привет 🎮"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(pa.array([raw])).to_pylist() == [expected]


def test_mask_token_configurable() -> None:
    assert clean_text(pa.array(["a ♥♥♥ b"]), mask_token="[MASK]").to_pylist() == ["a [MASK] b"]


@pytest.mark.parametrize(
    ("text", "score", "reason", "label"),
    [
        ("good", "1", "", 1),
        ("bad", "-1", "", 0),
        (" good ", " 1 ", "", 1),  # labels compared as trimmed strings
        ("no", "1", "", 1),  # very short kept
        ("très bien 🎮", "-1", "", 0),  # non-English / emoji kept
        ("x " * 5000, "1", "", 1),  # very long kept (truncated later)
        (None, "1", "empty", None),
        ("", "1", "empty", None),
        ("  \n\t ", "1", "empty", None),
        ("Early Access Review", "1", "placeholder", None),
        ("  early ACCESS review  ", "-1", "placeholder", None),
        ("Early Access Review: great so far", "1", "", 1),  # merely contains: kept
        ("fine", "0", "bad_label", None),
        ("fine", "", "bad_label", None),
        ("fine", None, "bad_label", None),
        ("fine", "abc", "bad_label", None),
        ("fine", "1.0", "bad_label", None),
        ("", "0", "empty", None),  # empty wins over bad_label
    ],
)
def test_rules(text: str | None, score: str | None, reason: str, label: int | None) -> None:
    (row,) = _classify([(text, score, "10")])
    assert row["reason"] == reason
    if label is not None:
        assert row["label"] == label
    assert row["group"] == "10"


def test_excluded_and_sample_labels() -> None:
    table = pa.table(
        {
            "category": ["fresh", "rotten", "plot", "weird", "plot"],
            "text": ["a", "b", "c", "d", ""],
            "movie_name": ["m1", "m1", "m2", "m3", "m4"],
        }
    )
    out = classify(
        table,
        columns=SAMPLE_COLUMNS,
        clean=CleanConfig(),
        seed=0,
        split_by="group",
        val_fraction=0.1,
        test_fraction=0.1,
    ).to_pylist()
    # A `plot` row is excluded even when its text is empty.
    assert [r["reason"] for r in out] == ["", "", "excluded", "bad_label", "excluded"]
    assert [r["label"] for r in out[:2]] == [1, 0]


def test_dedupe_same_group_and_cleaned_text() -> None:
    rows = [
        ("great ♥♥ game", "1", "10"),
        ("  great ♥ game ", "1", "10"),  # same after cleaning: duplicate
        ("great ♥ game", "1", "20"),  # other app: kept
        ("Great ♥ game", "1", "10"),  # case differs: kept
    ]
    batch = _classify_table(rows)
    dd = Deduper()
    out = apply_dedupe(batch, dd).column("reason").to_pylist()
    assert out == ["", "duplicate", "", ""]
    # Across batches (later blocks) too, and a dropped row never counts as "seen".
    again = apply_dedupe(batch, dd).column("reason").to_pylist()
    assert again == ["duplicate"] * 4


def test_deduper_merge_keeps_exactness() -> None:
    dd = Deduper(merge_every=10)
    keys = np.arange(100, dtype=np.uint64) * 7919
    assert not dd.mark(keys[:50]).any()
    assert dd.mark(keys[:50]).all()
    res = dd.mark(np.concatenate([keys[40:60], keys[55:56]]))
    assert res.tolist() == [True] * 10 + [False] * 10 + [True]
    assert len(dd) == 60
