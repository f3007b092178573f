"""Tokenization with the model's fast tokenizer, loaded once per Ray actor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from steam_ray.data.clean import KEPT


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "is_fast", False):
        from steam_ray.errors import DataError

        raise DataError(f"{path}: no fast tokenizer (tokenizer.json) for this model")
    return tok


class Encoder:
    """Truncating, non-padding encoder over the Rust tokenizer (same ids as
    ``tokenizer(text, truncation=True, max_length=N)``, without building attention masks)."""

    def __init__(self, path: str, max_length: int) -> None:
        tok = load_tokenizer(path)
        # A private copy: truncation/padding settings are mutable state on the Rust object.
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        self._tok.enable_truncation(max_length)
        self._tok.no_padding()
        self.max_length = max_length

    def encode(self, texts: list[str]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(input_ids as list<int32>, token counts, truncated flags) for ``texts``."""
        encs = self._tok.encode_batch_fast(texts)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int32, count=len(encs))
        truncated = np.fromiter((bool(e.overflowing) for e in encs), dtype=bool, count=len(encs))
        flat = np.fromiter(
            (i for e in encs for i in e.ids), dtype=np.int32, count=int(lengths.sum())
        )
        offsets = np.zeros(len(encs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        return ids, lengths, truncated


class TokenizeBatch:
    """Ray Data callable class: adds ``input_ids``, ``num_tokens``, ``truncated`` for kept rows
    (dropped rows pass through with nulls so they can be counted and kept aside)."""

    def __init__(self, path: str, max_length: int) -> None:
        self._enc = Encoder(path, max_length)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        kept = pc.equal(batch.column("reason"), KEPT).to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(kept)
        list_type = pa.list_(pa.int32())
        if idx.size == n:
            ids, lengths, truncated = self._enc.encode(batch.column("text").to_pylist())
            num_tokens = pa.array(lengths)
            trunc = pa.array(truncated)
        else:
            texts = batch.column("text").take(pa.array(idx)).to_pylist()
            k_ids, k_len, k_trunc = self._enc.encode(texts)
            # Scatter kept rows' values back to their positions; dropped rows get nulls.
            pos = np.full(n, -1, dtype=np.int64)
            pos[idx] = np.arange(idx.size)
            take = pa.array(pos, mask=pos < 0)
            ids = k_ids.take(take) if idx.size else pa.nulls(n, list_type)
            num_tokens = pa.array(k_len).take(take) if idx.size else pa.nulls(n, pa.int32())
            trunc = pa.array(k_trunc).take(take) if idx.size else pa.nulls(n, pa.bool_())
        return (
            batch.append_column(pa.field("input_ids", list_type), ids)
            .append_column(pa.field("num_tokens", pa.int32()), num_tokens)
            .append_column(pa.field("truncated", pa.bool_()), trunc)
        )
