"""The quickstart's config (packaged file + workdir paths + --set) and its stage timer."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.errors import ConfigError
from steam_ray.quickstart import STAGES, StageTimer, quickstart_config


def test_every_output_is_under_the_workdir(tmp_path: Path) -> None:
    cfg = quickstart_config(str(tmp_path / "w"), sets=["train.epochs=1"])
    root = tmp_path.resolve() / "w"
    assert cfg.data.output == cfg.train.data == cfg.evaluate.data == str(root / "data")
    outputs = (cfg.train.output, cfg.tune.output, cfg.registry.root, cfg.evaluate.output)
    assert all(Path(p).is_relative_to(root) for p in (*outputs, cfg.predict.output))
    assert cfg.serve.registry == cfg.registry.root
    assert cfg.tune.registry is None  # the register stage registers, not the sweep
    assert cfg.train.epochs == 1  # --set wins over the packaged file
    assert cfg.train.token_budget is not None and cfg.tune.scheduler == "asha"


def test_a_bad_set_or_a_file_as_workdir_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        quickstart_config(str(tmp_path), sets=["train.nope=1"])
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        quickstart_config(str(file))
    result = CliRunner().invoke(app, ["quickstart", "--workdir", str(file)])
    assert result.exit_code == 1
    assert "not a directory" in result.output and "Traceback" not in result.output


def test_stage_timer_numbers_and_times_each_stage() -> None:
    lines: list[str] = []
    timer = StageTimer(total=2, echo=lines.append)
    with timer.stage("prepare", "data"):
        pass
    with pytest.raises(RuntimeError), timer.stage("train", "model"):
        raise RuntimeError("boom")
    assert list(timer.seconds) == ["prepare", "train"]  # a failed stage is timed too
    assert lines[0] == "== [1/2] prepare: data" and lines[2] == "== [2/2] train: model"
    assert len(lines) == 3  # no "done" line for the failed stage
    assert len(STAGES) == 7
