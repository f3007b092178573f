"""The tokenization stage against the model's own HF tokenizer (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from transformers import AutoTokenizer

from steam_ray.data.pipeline import percentiles_from_hist
from steam_ray.data.tokenize import Encoder, TokenizeBatch, load_tokenizer, tokenizer_json

TEXTS = [
    "no",
    "Great game ♥ 10/10",
    "Привет мир 🎮",
    "word " * 400,  # cut before tokenizing (same ids)
    ("a" * 101 + " ") * 50,  # cut yields too few tokens: full text re-encoded
    "x" * 5000,  # no space to cut at
    "",
]


def test_same_ids_as_hf_truncation(minilm_path: str) -> None:
    enc = Encoder.from_pretrained(minilm_path, max_length=16)
    ids, lengths, truncated = enc.encode(TEXTS)
    hf = AutoTokenizer.from_pretrained(minilm_path)
    expected = [hf(t, truncation=True, max_length=16)["input_ids"] for t in TEXTS]
    assert ids.to_pylist() == expected
    assert ids.type == pa.list_(pa.int32())
    assert lengths.tolist() == [len(e) for e in expected]
    assert truncated.tolist() == [False, False, False, True, True, False, False]


def test_batch_tokenizes_only_kept_rows(minilm_path: str) -> None:
    batch = pa.table({"text": ["kept one", "dropped", "kept two"], "reason": ["", "empty", ""]})
    # Built from the tokenizer's JSON alone (what the actors get): the HF tokenizer's ids.
    out = TokenizeBatch(tokenizer_json(load_tokenizer(minilm_path)), 32)(batch)
    ids = out.column("input_ids").to_pylist()
    hf = AutoTokenizer.from_pretrained(minilm_path)
    assert ids[0] == hf("kept one", truncation=True, max_length=32)["input_ids"]
    assert ids[2] == hf("kept two", truncation=True, max_length=32)["input_ids"]
    assert ids[1] is None
    assert out.column("num_tokens").to_pylist()[1] is None
    assert out.column("num_tokens").to_pylist()[0] == len(ids[0])


def test_percentiles_exact() -> None:
    values = np.array([1, 2, 2, 3, 10, 10, 10, 10, 10, 50])
    pct = percentiles_from_hist(np.bincount(values))
    assert pct == {"p50": 10.0, "p90": 10.0, "p95": 50.0, "p99": 50.0, "max": 50.0}
    assert percentiles_from_hist(np.zeros(3, dtype=np.int64))["max"] == 0.0
