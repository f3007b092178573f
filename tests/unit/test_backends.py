"""Every serving backend against PyTorch fp32 on real reviews (the bundled sample's), with a
real if small sentiment head (serve_fixtures.make_fitted_checkpoint). For agreement, not speed:
speed is benchmarks/bench_backends.py's.

The quantised backends are held to what int8 can promise on a head this weak (its scores crowd
0.5, so a small perturbation flips a label that fp32 itself was unsure of): the same ranking
of reviews (Spearman) and the same label wherever fp32 is confident. A broken export or a
miscalibrated graph scores near chance on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from serve_fixtures import make_checkpoint, make_fitted_checkpoint, sample_reviews

from steam_ray.errors import ConfigError
from steam_ray.serve.backends import BACKENDS, ONNX_FILES, Predictor

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
