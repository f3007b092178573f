"""Bad inputs fail in the driver with a clear DataError/ConfigError, before any worker starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from train_fixtures import write_dataset
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.config import TrainConfig
from steam_ray.errors import ConfigError, DataError
from steam_ray.train.trainer import check_resume, validate_inputs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    out = tmp_path_factory.mktemp("data")
    write_dataset(out, minilm_path, rows=(20, 8, 4))
    return out


def test_valid_data_passes(data_dir: Path, minilm_path: str) -> None:
    manifest = validate_inputs(TrainConfig(data=str(data_dir), model=minilm_path))
    assert manifest.splits["train"].rows == 20


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data dir not found"):
        validate_inputs(TrainConfig(data=str(tmp_path / "nope")))


def test_dir_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"no manifest\.json"):
        validate_inputs(TrainConfig(data=str(tmp_path)))


def test_missing_split_dir(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shutil.rmtree(copy / "val")
    with pytest.raises(DataError, match=r"val: split directory missing"):
        validate_inputs(TrainConfig(data=str(copy)))


def test_split_without_parquet(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    for f in (copy / "train").glob("*.parquet"):
        f.unlink()
    with pytest.raises(DataError, match=r"no \.parquet files in the train split"):
        validate_inputs(TrainConfig(data=str(copy)))


def test_tokenizer_mismatch(data_dir: Path, minilm_path: str, tmp_path: Path) -> None:
    # A real, different tokenizer: MiniLM's vocabulary plus two tokens.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    tok.add_tokens(["steamdeckverified", "earlyaccessish"])
    other = tmp_path / "other-model"
    tok.save_pretrained(other)
    with pytest.raises(DataError, match="re-run `steam-ray data prepare"):
        validate_inputs(TrainConfig(data=str(data_dir), model=str(other)))


def test_unknown_checkpoint_metric(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint_metric"):
        validate_inputs(TrainConfig(data=str(data_dir), checkpoint_metric="f1_macro"))


def test_cli_prints_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path), "--output", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "no manifest.json" in result.output
    assert "Traceback" not in result.output
    # Validation happens before training: nothing was created under --output.
    assert not (tmp_path / "out").exists()


def _checkpointed_run(run_dir: Path, cfg: TrainConfig, data_fp: str, tok_fp: str) -> None:
    """What a run's checkpoint records about its set-up (steam_ray.json's keys)."""
    import json

    for step in (3, 6):
        ckpt = run_dir / f"checkpoint_step{step:06d}"
        ckpt.mkdir(parents=True)
        info = {
            "config": cfg.model_dump(mode="json"),
            "data_fingerprint": data_fp,
            "tokenizer_fingerprint": tok_fp,
            "global_step": step,
        }
        (ckpt / "steam_ray.json").write_text(json.dumps(info))


def test_resume_refuses_other_data_or_settings(data_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(data_dir), lr=1e-4)
    manifest = validate_inputs(cfg)
    run_dir = tmp_path / "run"
    check_resume(cfg, manifest, str(run_dir))  # no run yet: nothing to check
    _checkpointed_run(run_dir, cfg, manifest.fingerprint, manifest.tokenizer_fingerprint)
    check_resume(cfg, manifest, str(run_dir))  # same data and settings: resume
    # Settings that do not change the computation may differ.
    check_resume(cfg.model_copy(update={"eval_every_steps": 5}), manifest, str(run_dir))
    with pytest.raises(ConfigError, match=r"checkpoint_step000006.*lr: checkpoint 0.0001"):
        check_resume(cfg.model_copy(update={"lr": 1e-3}), manifest, str(run_dir))
    with pytest.raises(ConfigError, match="batch_size"):
        check_resume(cfg.model_copy(update={"batch_size": 16}), manifest, str(run_dir))
    other = manifest.model_copy(update={"fingerprint": "0123456789abcdef"})
    with pytest.raises(ConfigError, match="data_fingerprint: checkpoint"):
        check_resume(cfg, other, str(run_dir))
