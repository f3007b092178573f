"""Serve pieces that need no Ray: request validation, length-sorted chunking, checkpoint refs,
the serve: config section, and the backends agreeing with each other on a real checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from serve_fixtures import make_checkpoint

from steam_ray.config import ServeConfig, load_config
from steam_ray.errors import ConfigError
from steam_ray.serve.backends import Predictor
from steam_ray.serve.schema import RequestError, parse_reviews
from steam_ray.serve.source import resolve_source

LIMITS = {"max_reviews": 4, "max_body_bytes": 2048, "max_text_bytes": 64}


def test_parse_reviews_accepts_valid_body() -> None:
    body = json.dumps({"reviews": ["good", "très bien ♥♥♥"]}).encode()
    assert parse_reviews(body, **LIMITS) == ["good", "très bien ♥♥♥"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{", 400, "invalid JSON"),
        (b"  ", 400, "empty body"),
        (b"\xff", 400, "UTF-8"),
        (b"3", 422, "JSON object"),
        (b'{"x": 1}', 422, 'missing field "reviews"'),
        (b'{"reviews": ["a"], "x": 1}', 422, "unknown field"),
        (b'{"reviews": {"a": 1}}', 422, "got an object"),
        (b'{"reviews": []}', 422, "is empty"),
        (b'{"reviews": ["a", ""]}', 422, "reviews[1] is empty"),
        (b'{"reviews": [true]}', 422, "got a boolean"),
        (b'{"reviews": ["\\udfff"]}', 422, "lone surrogate"),
        (b'{"reviews": ["a","b","c","d","e"]}', 413, "at most 4"),
        (json.dumps({"reviews": ["x" * 65]}).encode(), 413, "limit is 64"),
        (json.dumps({"reviews": ["x" * 60] * 40}).encode(), 413, "body"),
    ],
)
def test_parse_reviews_rejects_with_a_message(body: bytes, status: int, needle: str) -> None:
    with pytest.raises(RequestError) as exc:
        parse_reviews(body, **LIMITS)
    assert exc.value.status == status
    assert needle in exc.value.message


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("unit-ckpt") / "c", minilm_path, seed=5)


def test_chunks_sort_by_length_within_the_token_budget(checkpoint: Path) -> None:
    pred = Predictor(str(checkpoint), backend="torch", threads=1, token_budget=100)
    lengths = [50, 3, 40, 4, 5, 30]
    chunks = pred.chunks(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(lengths)
    for c in chunks:
        assert len(c) * max(lengths[i] for i in c) <= 100 or len(c) == 1


def test_backends_agree_and_sorting_keeps_input_order(checkpoint: Path, tmp_path: Path) -> None:
    texts = ["great fun", "a broken buggy mess that crashed " * 10, "ok", "love it " * 30]
    ref = Predictor(str(checkpoint), backend="torch", threads=1, token_budget=64)
    alone = [float(ref.scores([t])[0]) for t in texts]
    assert list(ref.scores(texts)) == pytest.approx(alone, abs=1e-5)
    onnx = Predictor(str(checkpoint), backend="onnx", threads=1, cache_dir=str(tmp_path))
    assert list(onnx.scores(texts)) == pytest.approx(alone, abs=1e-4)
    # int8 backends: tests/unit/test_backends.py, on real reviews with a real head.


def test_resolve_source_paths_and_refs(checkpoint: Path, tmp_path: Path) -> None:
    src = resolve_source(str(checkpoint))
    assert src.path == str(checkpoint) and src.version is None
    with pytest.raises(ConfigError, match="checkpoint not found"):
        resolve_source(str(tmp_path / "missing" / "dir"))
    # A registry ref with no registry behind it: a clear error either way (module or root absent).
    with pytest.raises(ConfigError, match="'best'"):
        resolve_source("best", str(tmp_path / "no-registry"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve_source(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "extra",
    [
        {"run_dir": "r", "latest_checkpoint": None, "world_size": 1},  # steam-ray train
        {"metric": "macro_f1", "trials": [], "best_trial_id": "t0"},  # steam-ray tune
    ],
)
def test_a_run_dir_resolves_to_its_best_checkpoint(
    checkpoint: Path, tmp_path: Path, extra: dict[str, object]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"best_checkpoint": str(checkpoint), **extra}))
    src = resolve_source(str(out))
    assert src.path == str(checkpoint) and src.ref == str(out) and src.version is None


@pytest.mark.parametrize("record", [{"best_checkpoint": None}, {"trials": []}])
def test_a_run_dir_without_a_best_checkpoint_is_a_clear_error(
    tmp_path: Path, record: dict[str, object]
) -> None:
    (tmp_path / "result.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="has no best_checkpoint") as err:
        resolve_source(str(tmp_path))
    assert str(tmp_path / "result.json") in str(err.value)
    (tmp_path / "result.json").write_text(json.dumps({"best_checkpoint": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match="which does not exist"):
        resolve_source(str(tmp_path))


def test_a_directory_with_neither_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json and no result\.json") as err:
        resolve_source(str(tmp_path))
    assert "train/tune output" in str(err.value)


def test_a_gs_run_dir_resolves_on_the_object_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gcs_emulator

    from steam_ray import storage

    em = gcs_emulator.start(tmp_path / "fake-gcs.log")
    monkeypatch.setenv(storage.GCS_EMULATOR_ENV, em.url)  # restored after the test
    try:
        em.create_bucket("serve-units")
        gcs_emulator.use(em)
        best = "gs://serve-units/tune/trial_1/checkpoint_step000010"
        storage.write_json(f"{best}/config.json", {"model_type": "bert"})
        storage.write_json("gs://serve-units/tune/result.json", {"best_checkpoint": best})
        assert resolve_source("gs://serve-units/tune").path == best
    finally:
        em.stop()
        storage.clear_cache()


def test_serve_config_section() -> None:
    cfg = load_config(None, {"serve": {"autoscaling": {"min_replicas": 1, "max_replicas": 3}}})
    assert cfg.serve.autoscaling.max_replicas == 3
    with pytest.raises(ValueError, match="min_replicas"):
        ServeConfig(autoscaling={"min_replicas": 3, "max_replicas": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Extra inputs"):
        ServeConfig(replicas=2)  # type: ignore[call-arg]


def test_default_autoscaling_passes_serves_own_validation() -> None:
    """The config's autoscaling section, as ``deployment_options`` hands it to Serve, is one
    Serve accepts without a warning (a look-back window at or below Serve's 10 s metrics
    interval warns today and is to become an error)."""
    import warnings

    from ray.serve.config import AutoscalingConfig

    from steam_ray.serve.app import MODEL_DEPLOYMENT, deployment_options

    cfg = ServeConfig(single_deployment=False, autoscaling={"min_replicas": 1, "max_replicas": 4})  # type: ignore[arg-type]
    scale = deployment_options(cfg)[MODEL_DEPLOYMENT]["autoscaling_config"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoscalingConfig(**scale)
    with pytest.raises(ValueError, match="look_back_period_s"):
        ServeConfig(autoscaling={"look_back_period_s": 10})  # type: ignore[arg-type]


def test_queue_bounds_reach_serve_as_options_it_accepts() -> None:
    """Both deployments get a bounded queue (excess load: a fast 503, not an unbounded wait),
    in a form Serve's own deployment config accepts; 0 is refused as Serve refuses it."""
    from ray.serve._private.config import DeploymentConfig

    from steam_ray.serve.app import INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT, deployment_options

    cfg = ServeConfig(
        single_deployment=False, max_queued_requests=8, ingress_max_queued_requests=-1
    )
    opts = deployment_options(cfg)
    assert opts[MODEL_DEPLOYMENT]["max_queued_requests"] == 8
    assert opts[INGRESS_DEPLOYMENT]["max_queued_requests"] == -1
    for o in opts.values():
        DeploymentConfig(max_queued_requests=o["max_queued_requests"])
    with pytest.raises(ValueError, match="max_queued_requests must be -1"):
        ServeConfig(max_queued_requests=0)


def test_single_deployment_has_the_models_resources_and_the_ingress_limits() -> None:
    """One deployment: the model's CPUs/GPUs and autoscaling, but Serve lets in what an
    ingress would, so admission control (not Serve's retrying queue) holds the model."""
    from ray.serve._private.config import DeploymentConfig

    from steam_ray.serve.app import INGRESS_DEPLOYMENT, deployment_options

    cfg = ServeConfig(
        single_deployment=True,
        num_cpus=2,
        max_ongoing_requests=8,
        ingress_max_ongoing_requests=99,
        autoscaling={"min_replicas": 1, "max_replicas": 3},
    )
    opts = deployment_options(cfg)
    assert set(opts) == {INGRESS_DEPLOYMENT}
    (only,) = opts.values()
    assert only["ray_actor_options"]["num_cpus"] == 2 and "autoscaling_config" in only
    assert only["max_ongoing_requests"] == 99
    DeploymentConfig(max_ongoing_requests=99, max_queued_requests=only["max_queued_requests"])


def test_one_deployment_on_cpu_replicas_two_with_gpus_unless_set() -> None:
    """single_deployment None: the CPU default is one deployment (measured faster on CPU); a
    GPU replica keeps a CPU ingress in front so each scales apart; an explicit value wins."""
    from steam_ray.serve.app import INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT, deployment_options

    assert set(deployment_options(ServeConfig())) == {INGRESS_DEPLOYMENT}
    gpu = deployment_options(ServeConfig(num_gpus=0.5))
    assert set(gpu) == {INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT}
    assert gpu[MODEL_DEPLOYMENT]["ray_actor_options"]["num_gpus"] == 0.5
    assert ServeConfig(num_gpus=1, single_deployment=True).one_deployment
    assert not ServeConfig(single_deployment=False).one_deployment
    # The cluster's config states it: GPU model replicas behind a CPU ingress.
    assert load_config("cluster").serve.single_deployment is False


def test_high_throughput_env_only_for_a_ray_serve_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from steam_ray.serve import run

    a, b = run.high_throughput_env(8000), run.high_throughput_env(8001)
    assert a["RAY_SERVE_ENABLE_HA_PROXY"] == a["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    # Two local servers on one machine must not share HAProxy's files.
    assert a["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] != b["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]
    for key in list(a):
        # setenv first so monkeypatch records the key and removes it after the test:
        # delenv of an absent key records nothing, and the values set below leaked into
        # later tests' `steam-ray serve` subprocesses (HAProxy where the test wanted none).
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")  # the user's choice wins
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run._use_high_throughput(ServeConfig(port=8002))
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert "8002" in os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]
    # A cluster's own environment decides there; and the switch turns it off locally.
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    monkeypatch.setenv("RAY_ADDRESS", "ray://example:10001")
    run._use_high_throughput(ServeConfig(port=8003))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ
    monkeypatch.delenv("RAY_ADDRESS")
    run._use_high_throughput(ServeConfig(port=8004, high_throughput=False))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ
