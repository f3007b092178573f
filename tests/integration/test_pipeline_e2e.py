"""The stages chained through the real CLI: `data prepare` output is what `train` consumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.data.manifest import read_manifest

pytestmark = pytest.mark.integration


def test_prepare_then_train_via_cli(ray_cluster: Any, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "train"
    runner = CliRunner()
    prep = runner.invoke(
        app,
        [
            *("data", "prepare", "--source", "sample", "--output", str(data)),
            *("--limit", "1500", "--max-length", "48", "--no-keep-rejected"),
        ],
    )
    assert prep.exit_code == 0, prep.output
    manifest = read_manifest(str(data))
    assert manifest.rows_read == 1500

    result = runner.invoke(
        app,
        [
            *("train", "--data", str(data), "--output", str(out), "--num-workers", "2"),
            *("--max-steps", "4", "--batch-size", "8", "--experiment-name", "e2e"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["data_fingerprint"] == manifest.fingerprint
    assert record["global_step"] == 4 and record["world_size"] == 2
    ckpt = Path(record["best_checkpoint"])
    info = json.loads((ckpt / "steam_ray.json").read_text())
    assert info["data_fingerprint"] == manifest.fingerprint
    assert info["tokenizer_fingerprint"] == manifest.tokenizer_fingerprint
    assert (ckpt / "config.json").is_file() and (ckpt / "metrics.json").is_file()

    # A model whose tokenizer differs from the data's is refused before any worker starts.
    other = tmp_path / "other-tok"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(manifest.tokenizer)
    tok.add_tokens(["steamrayextratoken"])
    tok.save_pretrained(other)
    bad = runner.invoke(
        app, ["train", "--data", str(data), "--output", str(out), "--model", str(other)]
    )
    assert bad.exit_code == 1
    assert "tokenizer" in bad.output
