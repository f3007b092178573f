"""Training batches mix games: ``data prepare`` on a file sorted by game, then the real
training batch stream (``read_train_split`` -> a Train-style streaming shard ->
``train_batches``), and the capped validation read."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pytest

from steam_ray.config import DataConfig
from steam_ray.data.pipeline import prepare
from steam_ray.train.data import read_eval_split, read_train_split, train_batches

pytestmark = pytest.mark.integration

GAMES = 300
ROWS_PER_GAME = 40
BATCH = 32
EPOCHS = 5


def _sorted_steam_csv(path: Path) -> None:
    """Steam-schema rows sorted by app_id, as the Kaggle file is: every game's rows together."""
    rng = np.random.default_rng(0)
    words = ["fun", "bad", "great", "boring", "story", "graphics", "price", "bugs", "music"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["app_id", "app_name", "review_text", "review_score", "review_votes"])
        for g in range(GAMES):
            for i in range(ROWS_PER_GAME):
                text = " ".join(rng.choice(words, size=int(rng.integers(2, 8))))
                w.writerow([1000 + g, f"Game {g}", f"{text} {g} {i}", "1" if i % 3 else "-1", 0])


def _group_by_ids(out: Path, split: str) -> dict[tuple[int, ...], str]:
    table = pads.dataset(str(out / split), format="parquet").to_table()
    ids = table.column("input_ids").to_pylist()
    groups = table.column("group").to_pylist()
    return {tuple(i): g for i, g in zip(ids, groups, strict=True)}


def _file_by_ids(out: Path, split: str) -> dict[tuple[int, ...], str]:
    lookup = {}
    for f in sorted((out / split).glob("*.parquet")):
        for ids in (
            pads.dataset(str(f), format="parquet").to_table().column("input_ids").to_pylist()
        ):
            lookup[tuple(ids)] = f.name
    return lookup


def _file_order(rows: list[tuple[int, ...]], files: dict[tuple[int, ...], str]) -> list[str]:
    """The order an epoch read the files in: files sorted by the mean position of their rows."""
    positions: dict[str, list[int]] = {}
    for pos, row in enumerate(rows):
        positions.setdefault(files[row], []).append(pos)
    return sorted(positions, key=lambda f: float(np.mean(positions[f])))


def _epoch_rows(ds: Any, seed: int, epoch: int) -> list[list[tuple[int, ...]]]:
    """One epoch of real training batches; each row as its token ids (its identity)."""
    out = []
    for batch in train_batches(
        ds,
        batch_size=BATCH,
        token_budget=None,
        pad_id=0,
        seed=seed + epoch,
        shuffle_buffer_rows=1024,
    ):
        ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
        out.append(
            [tuple(int(t) for t in row[m.astype(bool)]) for row, m in zip(ids, mask, strict=True)]
        )
    return out


def _mean_distinct(batches: list[list[str]]) -> float:
    full = [b for b in batches if len(b) == BATCH]
    return float(np.mean([len(set(b)) for b in full]))


def test_training_batches_mix_games_and_epochs_differ(
    ray_cluster: Any, tmp_path: Path, minilm_path: str
) -> None:
    src = tmp_path / "sorted.csv"
    _sorted_steam_csv(src)
    out = tmp_path / "data"
    cfg = DataConfig(
        source="steam",
        input=str(src),
        output=str(out),
        model=minilm_path,
        max_length=32,
        # Many small ranges (a few games each) and write tasks of ~1,500 input rows: at this
        # size, the layout the full Kaggle file gets with 8 MiB ranges and 100k-row writes.
        csv_chunk_bytes=8 * 1024,
        min_rows_per_write=1500,
    )
    m = prepare(cfg)
    assert m.rows_kept == GAMES * ROWS_PER_GAME
    lookup = _group_by_ids(out, "train")
    assert len(lookup) == m.splits["train"].rows  # every row identifiable by its ids

    # No written file is one game, and any slice of a file mixes its games.
    for f in (out / "train").glob("*.parquet"):
        groups = pads.dataset(str(f), format="parquet").to_table().column("group").to_pylist()
        first = groups[:BATCH]
        assert len(set(groups)) > 5 and len(set(first)) > BATCH // 2, f

    ds = read_train_split(str(out / "train"), ["input_ids", "label"], seed=7)
    shard = ds.streaming_split(1, equal=True)[0]  # what a Train worker iterates
    epoch_rows = [_epoch_rows(shard, 7, e) for e in range(EPOCHS)]
    epochs = [[[lookup[r] for r in b] for b in e] for e in epoch_rows]

    rows = [g for b in epochs[0] for g in b]
    assert sorted(rows) == sorted(lookup.values())  # each row exactly once per epoch
    rng = np.random.default_rng(0)
    full_shuffle = [
        _mean_distinct(
            [list(rng.permutation(rows)[i : i + BATCH]) for i in range(0, len(rows), BATCH)]
        )
        for _ in range(3)
    ]
    ours = [_mean_distinct(e) for e in epochs]
    print(f"distinct games per batch: ours {ours}, full shuffle {full_shuffle}")
    assert min(ours) >= 0.8 * float(np.mean(full_shuffle))

    # Two epochs see different orders: not just a reshuffled buffer over the same file order.
    # (Games cannot show it: every file already mixes most of them.)
    seq = [[r for b in e for r in b] for e in epoch_rows]
    assert all(seq[0] != s for s in seq[1:])
    files = _file_by_ids(out, "train")
    orders = [_file_order(s, files) for s in seq]
    print(f"file order per epoch: {orders}")
    # A handful of files here: 5 epochs in one order by chance is (1/3!)^4 ~ 1/1,300. Without
    # reseeding per epoch every epoch reads them in one order.
    assert len(orders[0]) >= 3 and len({tuple(o) for o in orders}) > 1


def test_capped_validation_scores_many_games(
    ray_cluster: Any, tmp_path: Path, minilm_path: str
) -> None:
    src = tmp_path / "sorted.csv"
    _sorted_steam_csv(src)
    out = tmp_path / "data"
    m = prepare(
        DataConfig(
            source="steam",
            input=str(src),
            output=str(out),
            model=minilm_path,
            max_length=32,
            val_fraction=0.3,
            csv_chunk_bytes=8 * 1024,
            min_rows_per_write=1500,
        )
    )
    lookup = _group_by_ids(out, "val")
    val_games = set(lookup.values())
    cap = 200
    ds = read_eval_split(str(out / "val"), ["input_ids", "label"], 3, m.splits["val"].rows, cap)
    seen: list[str] = []
    for batch in ds.iterator().iter_batches(batch_size=64, batch_format="numpy"):
        seen += [lookup[tuple(int(t) for t in ids)] for ids in batch["input_ids"]]
        if len(seen) >= cap:
            break
    assert len(seen) >= cap
    seen = seen[:cap]
    # 200 rows at random from ~90 games hit ~80 of them; the first 200 rows of a file
    # sorted by game would hit 5.
    assert len(set(seen)) >= 0.6 * len(val_games), (len(set(seen)), len(val_games))
