"""Inference backends for a sentiment checkpoint: PyTorch fp32 / dynamic int8, ONNX Runtime
fp32 and four int8 variants, and PyTorch bf16/fp16 on GPU. No Ray here: the Serve replica, the
benchmarks and the plain FastAPI baseline all use the same ``Predictor``.

ONNX int8 variants (each exported once per weights and node, cached beside ``model.onnx``):
- ``onnx-int8``: dynamic, per-tensor weight scales on the plain export;
- ``onnx-int8-fused``: ORT's transformer fusions (attention, skip/embed layer norm, GELU),
  then dynamic int8 with per-channel weight scales;
- ``onnx-int8-static``: static QDQ, per-channel, MatMuls only, activation ranges calibrated on
  ``CALIBRATION_ROWS`` rows of the checkpoint's own training split (its ``steam_ray.json``);
- ``onnx-int8-mixed``: dynamic int8, per-channel, weight MatMuls only (attention's
  activation x activation products stay fp32), and the FFN output projections of the lower
  half of the encoder stay fp32: the op whose int8 moved scores most (RESULTS.md: mean
  |score - fp32 score| on training texts 0.0100 all-int8, 0.0066 with these kept fp32).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np

from steam_ray.batching import length_buckets, pad_rows
from steam_ray.config import CPU_DEFAULT_BACKEND, Backend
from steam_ray.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = get_args(Backend)[1:]  # all but "auto"
#: The cached ONNX file of each ONNX backend.
ONNX_FILES: dict[str, str] = {
    "onnx": "model.onnx",
    "onnx-int8": "model.int8.onnx",
    "onnx-int8-fused": "model.fused.int8pc.onnx",
    "onnx-int8-static": "model.qdq.int8pc.onnx",
    "onnx-int8-mixed": "model.mixed.int8pc.onnx",
}
CALIBRATION_ROWS = 512
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")


class _Runner(Protocol):
    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def resolve_backend(backend: Backend, device: str, batch_independent: bool = False) -> Backend:
    """``auto``: torch (bf16/fp16) on GPU; on CPU the measured ``CPU_DEFAULT_BACKEND``, or
    torch fp32 where a score must not depend on the reviews batched beside it (batch jobs:
    evaluate, predict, monitor's reference), which dynamic int8's per-batch scales break."""
    if backend != "auto":
        if device == "cuda" and backend != "torch":
            raise ConfigError(f"backend {backend!r} is CPU-only; use torch on GPU replicas")
        return backend
    return "torch" if device == "cuda" or batch_independent else CPU_DEFAULT_BACKEND


def weights_fingerprint(checkpoint: str) -> str:
    """sha256 of the weight file: names ONNX exports and, with no registry, the model version."""
    for name in WEIGHT_FILES:
        path = Path(checkpoint) / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    raise ConfigError(f"{checkpoint}: no model weights ({' or '.join(WEIGHT_FILES)})")


def _softmax_positive(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e[:, 1] / e.sum(axis=1)
    return out


def _torch_runner(checkpoint: str, backend: str, device: str) -> _Runner:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    dtype = None
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        model = model.to(device="cuda", dtype=dtype)
    elif backend == "torch-int8":
        with warnings.catch_warnings():
            # torch.ao dynamic quantization is deprecated in favour of torchao (not installed
            # here); it still works and is the stock int8 path for Linear layers on CPU.
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                model, {torch.nn.Linear}, dtype=torch.qint8
            )

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t_ids = torch.from_numpy(ids).to(model.device)
            t_mask = torch.from_numpy(mask).to(model.device)
            logits = model(input_ids=t_ids, attention_mask=t_mask).logits
            out: np.ndarray = logits.float().cpu().numpy()
            return out

    return run


def onnx_path(checkpoint: str, backend: str, cache_dir: str | None) -> Path:
    """Export (once per weights and node, cached) and return ``backend``'s ONNX model."""
    root = Path(cache_dir or Path.home() / ".cache" / "steam_ray" / "onnx")
    folder = root / weights_fingerprint(checkpoint)[:16]
    fp32, target = folder / ONNX_FILES["onnx"], folder / ONNX_FILES[backend]
    if not fp32.is_file():
        _export_onnx(checkpoint, fp32)
    if not target.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            out = Path(tmp) / target.name
            _QUANTIZERS[backend](checkpoint, fp32, out)
            os.replace(out, target)  # atomic: replicas on one node may race on the cache
    return target


def _dynamic_int8(checkpoint: str, fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8)


def _fused_int8(checkpoint: str, fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(checkpoint)
    # BERT names (MiniLM) or DistilBERT's; ORT's "bert" fusions cover both graphs.
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    hidden = getattr(cfg, "hidden_size", None) or cfg.dim
    fused = out.with_name("fused.onnx")
    optimize_model(str(fp32), "bert", num_heads=heads, hidden_size=hidden).save_model_to_file(
        str(fused)
    )
    # Fused ops are in ORT's own domain, which ONNX shape inference cannot type: say float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(fused, out, per_channel=True, weight_type=QuantType.QInt8, extra_options=extra)


#: An FFN output projection's MatMul: BERT/MiniLM names, then DistilBERT's.
_FFN_OUT = re.compile(r"layer\.(\d+)/(?:output/dense|ffn/lin2)/MatMul$")


def ffn_outputs_kept_fp32(fp32: Path) -> list[str]:
    """Node names of the FFN output MatMuls in the lower half of the encoder's layers."""
    import onnx

    nodes = onnx.load(str(fp32), load_external_data=False).graph.node
    layer_of = {n.name: int(m.group(1)) for n in nodes if (m := _FFN_OUT.search(n.name))}
    half = (max(layer_of.values(), default=-1) + 1) // 2
    return sorted(name for name, layer in layer_of.items() if layer < half)


def _mixed_int8(checkpoint: str, fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = ffn_outputs_kept_fp32(fp32)
    if not kept:
        raise ConfigError(f"{checkpoint}: no FFN output MatMuls found in its ONNX export")
    quantize_dynamic(
        fp32,
        out,
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=kept,
        # Quantizing Q.K^T and softmax.V per call costs time and labels, and saves no weights.
        extra_options={"MatMulConstBOnly": True},
    )


def _static_int8(checkpoint: str, fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        fp32,
        out,
        _Calibration(checkpoint, CALIBRATION_ROWS),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


_QUANTIZERS = {
    "onnx-int8": _dynamic_int8,
    "onnx-int8-fused": _fused_int8,
    "onnx-int8-static": _static_int8,
    "onnx-int8-mixed": _mixed_int8,
}


def calibration_ids(checkpoint: str, rows: int) -> list[list[int]]:
    """Token ids of the first ``rows`` rows of the training split the checkpoint names."""
    import pyarrow.parquet as pq

    from steam_ray import storage

    info_path = str(Path(checkpoint) / "steam_ray.json")
    data = storage.read_json(info_path).get("data") if storage.exists(info_path) else None
    if not data:
        raise ConfigError(
            f"{checkpoint}: onnx-int8-static calibrates on the checkpoint's training data, "
            f"and {info_path} names none (a steam-ray train checkpoint has it)"
        )
    fs, inner = storage.resolve(storage.join(str(data), "train"))
    try:
        table = pq.ParquetDataset(inner, filesystem=fs).read(columns=["input_ids"])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{data}/train: cannot read calibration rows: {exc}") from exc
    ids: list[list[int]] = table.column("input_ids").to_pylist()[:rows]
    if not ids:
        raise ConfigError(f"{data}/train: no rows to calibrate onnx-int8-static on")
    return ids


class _Calibration:
    """onnxruntime's CalibrationDataReader: the rows in length-sorted padded batches."""

    def __init__(self, checkpoint: str, rows: int, token_budget: int = 2048) -> None:
        from transformers import AutoTokenizer

        ids = calibration_ids(checkpoint, rows)
        pad_id = int(AutoTokenizer.from_pretrained(checkpoint).pad_token_id or 0)
        feeds = []
        for chunk in length_buckets([len(x) for x in ids], token_budget, min_width=0):
            batch, mask = pad_rows([ids[i] for i in chunk], pad_id, min_width=0)
            feeds.append({"input_ids": batch, "attention_mask": mask})
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _export_onnx(checkpoint: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    target.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter (deprecated in torch 2.9+, still shipped): one file with
            # dynamic axes in seconds. The dynamo exporter (needs onnxscript) had not finished
            # a MiniLM export after 10 min on the loaded 2-core dev machine; revisit later.
            torch.onnx.export(
                model,
                (ids, mask),
                str(out),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "logits": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
                external_data=False,
            )
        os.replace(out, target)


def _onnx_runner(path: Path, threads: int) -> _Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    return run


@dataclass
class Prediction:
    label: str
    score: float  # P(positive)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


class Predictor:
    """A loaded checkpoint: texts in, P(positive) out, in input order.

    Rows are tokenized without padding, sorted by length and run in chunks of at most
    ``token_budget`` padded tokens, so one long review does not pad a batch of short ones.
    """

    def __init__(
        self,
        checkpoint: str,
        *,
        backend: Backend = "auto",
        device: str = "cpu",
        threads: int | None = None,
        max_length: int = 256,
        token_budget: int = 4096,
        cache_dir: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        self.threads = threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 1))
        torch.set_num_threads(self.threads)
        self.device = device
        self.backend = resolve_backend(backend, device)
        self.max_length = max_length
        self.token_budget = token_budget
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        if self.backend.startswith("onnx"):
            path = onnx_path(checkpoint, self.backend, cache_dir)
            self._run: _Runner = _onnx_runner(path, self.threads)
        else:
            self._run = _torch_runner(checkpoint, self.backend, device)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids: list[list[int]] = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length
        )["input_ids"]
        return ids

    def chunks(self, lengths: Sequence[int]) -> list[list[int]]:
        """Row indices sorted by length, cut so each chunk's padded size fits the budget."""
        # min_width=0: a chunk is exactly as wide as its longest row (training counts an
        # empty row as 1 wide; tokenizer output is never empty, only raw ids can be).
        return length_buckets(lengths, self.token_budget, min_width=0)

    def scores_from_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        scores = np.empty(len(ids), dtype=np.float64)
        for chunk in self.chunks([len(x) for x in ids]):
            batch, mask = pad_rows([ids[i] for i in chunk], self.pad_id, min_width=0)
            scores[chunk] = _softmax_positive(self._run(batch, mask).astype(np.float64))
        return scores

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty(0, dtype=np.float64)
        return self.scores_from_ids(self.encode(texts))

    def predict(self, texts: Sequence[str], threshold: float = 0.5) -> list[Prediction]:
        """Labels by ``positive iff score >= threshold`` (a registry version's tuned one)."""
        return [Prediction(label_of(s, threshold), float(s)) for s in self.scores(texts)]


def label_of(score: float, threshold: float = 0.5) -> str:
    """The one label rule: Serve, batch predictions and evaluation all use it."""
    return "positive" if score >= threshold else "negative"
