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
from steam_ray.train.trainer import validate_inputs


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
