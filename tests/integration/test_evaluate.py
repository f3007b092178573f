"""``steam-ray evaluate`` on the shared Ray cluster: a tiny prepared dataset, a registered
checkpoint, the real CLI; metrics checked against scores computed here with the same Predictor,
the report opened in a real browser, the card parsed, the registry and Serve's label rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from serve_fixtures import make_checkpoint
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from train_fixtures import write_dataset
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.config import EvaluateConfig, ServeConfig
from steam_ray.errors import DataError
from steam_ray.evaluate import PLOTS, evaluate, tune_threshold
from steam_ray.registry import Registry, register_checkpoint
from steam_ray.serve.backends import Predictor
from steam_ray.serve.run import app_args
from steam_ray.serve.source import ModelSource, resolve_source

pytestmark = pytest.mark.integration

MAX_LENGTH = 16  # short: many fixture rows are truncated, so both truncation slices exist


def _split_scores(data: Path, split: str, predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(data / split)
    ids = table.column("input_ids").to_pylist()
    return np.array(table.column("label").to_pylist()), predictor.scores_from_ids(ids)


@pytest.fixture(scope="module")
def setup(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Any:
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root / "data", minilm_path, rows=(32, 96, 80), max_length=MAX_LENGTH)
    ckpt = make_checkpoint(root / "ckpt", minilm_path, seed=3)
    reg = register_checkpoint(
        str(root / "registry"), "steam-sentiment", str(ckpt), metric="accuracy", mode="max",
        config={}, lineage={},
    )  # fmt: skip
    return root, ckpt, reg.version


@pytest.fixture(scope="module")
def evaluated(setup: Any) -> tuple[Path, Any, dict[str, Any]]:
    """The CLI on a registry version."""
    root, _, version = setup
    ref = f"steam-sentiment:{version.version}"
    args = ["evaluate", "--checkpoint", ref, "--registry", str(root / "registry")]
    args += ["--data", str(root / "data"), "--output", str(root / "out"), "--actors", "2"]
    result = CliRunner().invoke(app, [*args, "--set", "evaluate.bootstrap_resamples=500"])
    assert result.exit_code == 0, result.output
    print(result.stderr)  # the progress lines, for a failing test's log
    return root, version, _last_json(result.stdout)


def _last_json(stdout: str) -> Any:
    """The command's JSON result: Ray's worker log lines may precede it on stdout."""
    start = 0 if stdout.startswith("{") else stdout.rindex("\n{\n") + 1
    return json.loads(stdout[start:])


def test_metrics_match_scores_computed_here(evaluated: Any, minilm_path: str) -> None:
    root, version, summary = evaluated
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    predictor = Predictor(version.path, backend="torch")
    y_val, p_val = _split_scores(root / "data", "val", predictor)
    y, p = _split_scores(root / "data", "test", predictor)
    t = tune_threshold(y_val, p_val)
    assert metrics["threshold"]["value"] == pytest.approx(t, abs=1e-4)  # same rows, same scores
    assert summary["threshold"] == metrics["threshold"]["value"]
    assert summary["registry_version"] == f"steam-sentiment:{version.version}"
    test = metrics["splits"]["test"]
    assert test["rows"] == 80 and metrics["splits"]["val"]["rows"] == 96
    assert metrics["rejected"]["test"] == {"bad_label": 0, "nonfinite_score": 0}
    for key, at in (("at_threshold", t), ("at_0.5", 0.5)):
        assert test[key]["accuracy"] == pytest.approx(accuracy_score(y, p >= at), abs=1e-6)
        assert test[key]["macro_f1"] == pytest.approx(f1_score(y, p >= at, average="macro"))
    assert test["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    low, high = test["bootstrap"]["accuracy"]
    assert low <= test["at_threshold"]["accuracy"] <= high and high - low > 0
    assert test["ece_bins"] == 15 and 0 <= test["ece"] <= 1
    assert sum(b["count"] for b in test["reliability"]) == 80
    kinds = metrics["slices"]
    assert sum(r["n"] for r in kinds["truncated"]) == 80 and len(kinds["truncated"]) == 2
    assert sum(r["n"] for r in kinds["length"]) == 80
    assert 0 < len(kinds["group"]) <= 10
    worst = [r["accuracy"] for r in metrics["worst_slices"]]
    assert worst == sorted(worst)


def test_report_opens_in_a_browser(evaluated: Any, chromium: Any) -> None:
    out = evaluated[0] / "out"
    for name in PLOTS.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    chromium.get((out / "report.html").as_uri())
    images = chromium.execute_script(
        "return Array.from(document.images).map("
        "i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert sorted(src for src, *_ in images) == sorted(PLOTS.values())
    for src, complete, width, height in images:
        assert complete and width > 0 and height > 0, src
    text = chromium.find_element("tag name", "body").text
    assert "Slices (worst first)" in text and "Decision threshold" in text
    assert not list(out.parent.glob("out.staging-*")) and not list(out.parent.glob("out.old-*"))


def test_model_card_front_matter(evaluated: Any) -> None:
    root, version, _ = evaluated
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    card = (root / "out" / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pipeline_tag"] == "text-classification"
    result = front["model-index"][0]["results"][0]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["split"] == "test"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values["accuracy"] == metrics["splits"]["test"]["at_threshold"]["accuracy"]
    assert values["roc_auc"] == metrics["splits"]["test"]["roc_auc"]
    # The registry copy got the card through the registry API (version dir), not in model/.
    version_dir = Path(version.path).parent
    assert (version_dir / "README.md").read_text() == card
    assert not (Path(version.path) / "README.md").exists()


def test_registry_show_and_serve_use_the_threshold(evaluated: Any) -> None:
    root, version, summary = evaluated
    ref = f"steam-sentiment:{version.version}"
    shown = CliRunner().invoke(app, ["registry", "show", ref, "--root", str(root / "registry")])
    assert shown.exit_code == 0, shown.output
    evaluation = _last_json(shown.stdout)["evaluation"]
    assert evaluation["threshold"] == summary["threshold"]
    assert evaluation["metrics"]["test"]["accuracy"] == summary["test"]["accuracy"]
    source = resolve_source(ref, str(root / "registry"))
    assert source.threshold == summary["threshold"]
    # The label rule with a threshold pinned between two texts' scores (0.5 alone may not
    # split this untrained head's scores): the Predictor, and the source Serve deploys.
    texts = ["great fun amazing", "boring broken refund", "the game", "i played hours"]
    predictor = Predictor(version.path, backend="torch")
    scores = predictor.scores(texts)
    ranked = sorted(float(x) for x in scores)
    pinned = (ranked[1] + ranked[2]) / 2
    Registry(str(root / "registry")).attach_evaluation(
        "steam-sentiment", version.version, {**evaluation, "threshold": pinned}, "card"
    )
    source = resolve_source(ref, str(root / "registry"))
    args = app_args(source, ServeConfig())  # what build_app hands SentimentModel
    assert ModelSource.from_dict(args["source"]).threshold == pinned
    labels = [p.label for p in predictor.predict(texts, threshold=source.threshold)]
    assert labels.count("positive") == 2  # the two highest scores, whatever 0.5 would say
    assert labels == ["positive" if x >= pinned else "negative" for x in scores]


def test_local_checkpoint_gets_its_card_and_a_failed_run_keeps_the_report(setup: Any) -> None:
    root, ckpt, _ = setup
    out = root / "local-out"
    cfg = EvaluateConfig(
        checkpoint=str(ckpt), data=str(root / "data"), split="val", output=str(out),
        actors=1, bootstrap_resamples=100,
    )  # fmt: skip
    result = evaluate(cfg)
    assert result["registry_version"] is None and "test" not in result
    assert (ckpt / "README.md").read_text() == (out / "README.md").read_text()
    before = (out / "metrics.json").read_bytes()
    # A run failing after scoring (the manifest promises a row the shards lack) writes nothing.
    bad = root / "bad-data"
    shutil.copytree(root / "data", bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["splits"]["val"]["rows"] += 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="scored 96 rows but the manifest lists 97"):
        evaluate(cfg.model_copy(update={"data": str(bad)}))
    assert (out / "metrics.json").read_bytes() == before
    assert not list(root.glob("local-out.staging-*"))
