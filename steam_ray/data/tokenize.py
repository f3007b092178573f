"""Tokenization with the model's fast tokenizer, loaded once per Ray actor."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from steam_ray.data.clean import KEPT

#: A cut after max_length * this many characters leaves far more than max_length tokens for
#: ordinary text (~4-6 characters per token); rarer text falls back to the full encode.
CHARS_PER_TOKEN_BOUND = 8


def cut_long_text(text: str, limit: int) -> str:
    """``text`` itself when short, else its prefix up to the last space before ``limit``."""
    if len(text) <= limit:
        return text
    at = text.rfind(" ", 0, limit)
    return text[:at] if at > 0 else text


def tokenizer_json(tokenizer: Any) -> str:
    """The fast tokenizer's full Rust pipeline (normalizer, pre-tokenizer, model, post-processor)
    as JSON: what the tokenizer actors are built from."""
    return str(tokenizer.backend_tokenizer.to_str())


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

    def __init__(self, tokenizer_json: str, max_length: int) -> None:
        # Built from the serialized Rust tokenizer (``backend_tokenizer.to_str()``): a private
        # copy (truncation/padding are mutable state on it), and workers that only encode never
        # import transformers (seconds of start-up per actor on a small machine).
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.enable_truncation(max_length)
        self._tok.no_padding()
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, path: str, max_length: int) -> Encoder:
        return cls(tokenizer_json(load_tokenizer(path)), max_length)

    def encode(self, texts: list[str]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(input_ids as list<int32>, token counts, truncated flags) for ``texts``."""
        # Long reviews are tokenized in full and then truncated by the tokenizer; cutting them
        # first at a whitespace (a pre-token boundary) well past max_length tokens gives the
        # same ids for a fraction of the work. Where the cut text yields too few tokens to be
        # truncated, the full text is encoded instead, so the result is always exact.
        limit = self.max_length * CHARS_PER_TOKEN_BOUND
        cut = [cut_long_text(t, limit) for t in texts]
        encs = self._tok.encode_batch_fast(cut)
        redo = [
            i
            for i, (e, c, t) in enumerate(zip(encs, cut, texts, strict=True))
            if c is not t and not e.overflowing
        ]
        if redo:
            for i, e in zip(
                redo, self._tok.encode_batch_fast([texts[i] for i in redo]), strict=True
            ):
                encs[i] = e
        lists = [e.ids for e in encs]
        lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
        truncated = np.fromiter((bool(e.overflowing) for e in encs), dtype=bool, count=len(encs))
        return pa.array(lists, pa.list_(pa.int32())), lengths, truncated


class TokenizeBatch:
    """Ray Data callable class: adds ``input_ids``, ``num_tokens``, ``truncated`` for kept rows
    (dropped rows pass through with nulls so they can be counted and kept aside)."""

    def __init__(self, tokenizer_json: str, max_length: int) -> None:
        # Parallelism comes from the actor pool; a Rust thread pool per actor on top of it
        # only oversubscribes the CPUs.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self._enc = Encoder(tokenizer_json, max_length)

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
