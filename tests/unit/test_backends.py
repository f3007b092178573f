"""Every serving backend against PyTorch fp32 on real reviews (the bundled sample's), with a
real if small sentiment head (serve_fixtures.make_fitted_checkpoint). For agreement, not speed:
speed is benchmarks/bench_backends.py's.

The quantised backends are held to what int8 can promise on a head this weak (its scores crowd
0.5, so a small perturbation flips a label that fp32 itself was unsure of): the same ranking
of reviews (Spearman) and the same label wherever fp32 is confident. A broken export or a
miscalibrated graph scores near chance on both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from serve_fixtures import make_checkpoint, make_fitted_checkpoint, sample_reviews

from steam_ray.errors import ConfigError
from steam_ray.serve.backends import (
    BACKENDS,
    ONNX_FILES,
    Predictor,
    ffn_outputs_kept_fp32,
    onnx_path,
)

INT8 = [b for b in BACKENDS if "int8" in b]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("backends")
    ck = make_fitted_checkpoint(root / "ck", minilm_path, train=300)
    texts, labels = sample_reviews(240, skip=300)  # reviews the head never saw
    ref = Predictor(str(ck), backend="torch", threads=1, max_length=64).scores(texts)
    return {"ck": str(ck), "cache": str(root / "onnx"), "texts": texts, "ref": ref, "y": labels}


def _scores(world: dict[str, Any], backend: str) -> np.ndarray:
    pred = Predictor(
        world["ck"], backend=backend, threads=1, max_length=64, cache_dir=world["cache"]
    )  # type: ignore[arg-type]
    return pred.scores(world["texts"])


def test_the_fitted_head_is_a_real_classifier(world: dict[str, Any]) -> None:
    accuracy = float(np.mean((world["ref"] >= 0.5) == np.asarray(world["y"])))
    assert accuracy > 0.58, accuracy  # 0.5 is chance on the balanced sample


def test_onnx_fp32_matches_torch(world: dict[str, Any]) -> None:
    assert _scores(world, "onnx") == pytest.approx(world["ref"], abs=1e-4)


@pytest.mark.parametrize("backend", INT8)
def test_int8_backend_ranks_and_labels_like_fp32(world: dict[str, Any], backend: str) -> None:
    got, ref = _scores(world, backend), world["ref"]
    assert np.all((got >= 0.0) & (got <= 1.0))
    rho = float(spearmanr(got, ref).statistic)
    confident = np.abs(ref - 0.5) >= 0.25
    agree = float(np.mean((got >= 0.5)[confident] == (ref >= 0.5)[confident]))
    assert confident.sum() >= 60 and rho >= 0.75 and agree >= 0.85, (rho, agree)
    if backend.startswith("onnx"):  # exported once per weights, cached under its own name
        assert len(list(Path(world["cache"]).glob(f"*/{ONNX_FILES[backend]}"))) == 1


def test_static_int8_needs_the_checkpoints_training_data(minilm_path: str, tmp_path: Path) -> None:
    ck = make_checkpoint(tmp_path / "ck", minilm_path, seed=1)  # its steam_ray.json: no data
    with pytest.raises(ConfigError, match="onnx-int8-static calibrates on the checkpoint"):
        Predictor(str(ck), backend="onnx-int8-static", cache_dir=str(tmp_path / "onnx"))


def test_mixed_int8_keeps_the_lower_half_ffn_outputs_in_fp32(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """MiniLM (6 layers, BERT names) keeps layers 0-2's; a 4-layer DistilBERT (its own names,
    random weights: no hub here) keeps layers 0-1's, so the cluster's model gets the same rule."""
    import onnx
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    _scores(world, "onnx-int8-mixed")  # builds (or reuses) the cached graph
    folder = next(Path(world["cache"]).glob(f"*/{ONNX_FILES['onnx-int8-mixed']}")).parent
    kept = ffn_outputs_kept_fp32(folder / ONNX_FILES["onnx"])
    assert [re.search(r"layer\.(\d+)/output/dense/MatMul$", n) is not None for n in kept] == [
        True
    ] * 3, kept
    quantized = onnx.load(str(folder / ONNX_FILES["onnx-int8-mixed"])).graph.node
    fp32_matmuls = {n.name for n in quantized if n.op_type == "MatMul"}
    assert set(kept) <= fp32_matmuls  # left as float MatMuls, not MatMulInteger

    cfg = DistilBertConfig(vocab_size=64, dim=32, n_layers=4, n_heads=2, hidden_dim=64)
    DistilBertForSequenceClassification(cfg).save_pretrained(tmp_path / "distil")
    fp32 = onnx_path(str(tmp_path / "distil"), "onnx", str(tmp_path / "onnx"))
    kept = ffn_outputs_kept_fp32(fp32)
    assert [n.split("/")[-4:] for n in kept] == [
        ["layer.0", "ffn", "lin2", "MatMul"],
        ["layer.1", "ffn", "lin2", "MatMul"],
    ]


def test_batch_jobs_score_a_review_alone_the_serving_default_by_its_batch(
    world: dict[str, Any],
) -> None:
    """Dynamic int8 scales activations per batch, so the served default's score of a review
    moves with the reviews batched beside it (fine for serving: batches are arbitrary there).
    Batch jobs (predict, evaluate, monitor's reference: ScoreBatch) resolve "auto" to fp32,
    so a file's row order cannot change a score."""
    import pyarrow as pa

    from steam_ray.config import CPU_DEFAULT_BACKEND
    from steam_ray.predict import ScoreBatch

    text, others = world["texts"][0], world["texts"][1:16]
    served = Predictor(
        world["ck"], backend="auto", threads=1, max_length=64, cache_dir=world["cache"]
    )
    assert served.backend == CPU_DEFAULT_BACKEND != "torch"
    alone, beside = served.scores([text])[0], served.scores([text, *others])[0]
    assert abs(alone - beside) > 1e-6, "the default is batch-independent: revisit the rule"
    job = ScoreBatch(world["ck"], threads=1, max_length=64)
    assert job.predictor.backend == "torch"
    alone = job.scores(pa.table({"text": [text]}))[0]
    beside = job.scores(pa.table({"text": [text, *others]}))[0]
    assert alone == pytest.approx(beside, abs=1e-6)
