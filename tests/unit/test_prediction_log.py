"""The Serve prediction log (``serve.prediction_log``) with the real MiniLM tokenizer, written
as real Parquet to a local directory and to a real GCS server (fake-gcs-server), and read back
by the monitor's own reader."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gcs_emulator
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from steam_ray.config import MonitorConfig, PredictionLogSection
from steam_ray.monitor import Tokens, log_window
from steam_ray.serve.prediction_log import PredictionLog, text_hash

TEXTS = [
    "Great co-op, the story kept me hooked for sixty hours.",
    "Crashes every ten minutes. Refunded.",
    "ｆｕｌｌ ｗｉｄｔｈ ☃☃☃ 🎮🎮 ᚠᚢᚦ",  # unknown tokens for a BERT vocabulary
    "long " * 80,
]
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str) -> Any:
    return AutoTokenizer.from_pretrained(minilm_path)


def _log(tokenizer: Any, path: str, **kw: Any) -> tuple[PredictionLog, list[int]]:
    dropped: list[int] = []
    cfg = PredictionLogSection(path=path, **{"flush_interval_s": 3600, **kw})
    plog = PredictionLog(
        cfg, writer="r1", tokenizer=tokenizer, max_length=MAX_LENGTH, on_drop=dropped.append
    )
    return plog, dropped


def _offer(plog: PredictionLog, tokenizer: Any, texts: list[str]) -> None:
    ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    scores = [0.1 + 0.2 * (i % 4) for i in range(len(texts))]
    labels = ["positive" if s >= 0.5 else "negative" for s in scores]
    plog.offer(texts, ids, scores, labels, "v7")


def test_rows_are_what_the_monitor_measures(tokenizer: Any, tmp_path: Path, minilm_path: str):
    plog, dropped = _log(tokenizer, str(tmp_path / "log"), keep_text=True)
    _offer(plog, tokenizer, TEXTS)
    plog.close()
    window = log_window(MonitorConfig(), str(tmp_path / "log"))
    lengths, unk = Tokens(minilm_path, MAX_LENGTH).of_texts(TEXTS)
    assert window.texts == TEXTS and window.rows == 4 and not dropped
    assert window.num_tokens.tolist() == lengths.tolist()
    assert window.unk_rate.tolist() == pytest.approx(unk.tolist())
    assert unk[2] > 0.3 and unk[0] == 0  # the rule sees unknown tokens where there are some
    table = pq.read_table(next((tmp_path / "log").glob("*.parquet")))
    assert table.column("truncated").to_pylist() == [False, False, False, True]
    assert table.column("text_sha256").to_pylist() == [text_hash(t) for t in TEXTS]
    assert set(table.column("model_version").to_pylist()) == {"v7"}


def test_text_only_when_kept_and_no_half_written_files(tokenizer: Any, tmp_path: Path) -> None:
    plog, _ = _log(tokenizer, str(tmp_path / "log"))
    for _ in range(3):
        _offer(plog, tokenizer, TEXTS)
        plog.flush()
    plog.close()
    files = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert len(files) == 3 and all(f.startswith("part-") and f.endswith(".parquet") for f in files)
    window = log_window(MonitorConfig(), str(tmp_path / "log"))
    assert window.texts is None and window.rows == 12


def test_a_full_buffer_drops_and_counts_without_blocking(tokenizer: Any, tmp_path: Path) -> None:
    plog, dropped = _log(tokenizer, str(tmp_path / "log"), max_pending_rows=6, flush_rows=100)
    _offer(plog, tokenizer, TEXTS)
    _offer(plog, tokenizer, TEXTS)
    assert dropped == [2] and plog.dropped == 2
    plog.close()
    assert log_window(MonitorConfig(), str(tmp_path / "log")).rows == 6


def test_a_failing_write_is_counted_and_never_raises(tokenizer: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    plog, dropped = _log(tokenizer, str(blocker / "log"))
    _offer(plog, tokenizer, TEXTS)
    plog.close()  # the write fails inside; the caller sees nothing but the count
    assert dropped == [4] and plog.written == 0


def test_sampling_and_size_triggered_flush(tokenizer: Any, tmp_path: Path) -> None:
    plog, _ = _log(tokenizer, str(tmp_path / "log"), sample_rate=0.25, flush_rows=200)
    for _ in range(500):
        _offer(plog, tokenizer, TEXTS)  # 2000 reviews, ~500 sampled
    deadline = time.monotonic() + 30  # the writer thread flushes once 200 rows wait
    while plog.written == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plog.written >= 200, "no flush at flush_rows"
    plog.close()
    total = plog.written
    assert 400 <= total <= 600, total  # Binomial(2000, 0.25): mean 500, sd 19


def test_offer_is_safe_from_many_threads(tokenizer: Any, tmp_path: Path) -> None:
    plog, dropped = _log(tokenizer, str(tmp_path / "log"), flush_rows=50)
    threads = [
        threading.Thread(target=lambda: [_offer(plog, tokenizer, TEXTS) for _ in range(25)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plog.close()
    assert plog.written == 400 and not dropped


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gcs_emulator.GcsEmulator]:
    with gcs_emulator.serving(tmp_path_factory.mktemp("gcs") / "gcs.log", "steam-ray-logs") as s:
        yield s


def test_log_on_gcs(tokenizer: Any, emulator: gcs_emulator.GcsEmulator) -> None:
    uri = f"gs://steam-ray-logs/{secrets.token_hex(4)}/predictions"
    plog, dropped = _log(tokenizer, uri)
    _offer(plog, tokenizer, TEXTS)
    plog.flush()
    _offer(plog, tokenizer, TEXTS[:2])
    plog.close()
    window = log_window(MonitorConfig(), uri)
    assert window.rows == 6 and not dropped
