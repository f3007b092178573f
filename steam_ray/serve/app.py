"""The Ray Serve application: a FastAPI ingress in front of an autoscaling model deployment.

``build_app`` is the import path Serve configs name (``steam_ray.serve.app:build_app``): the
CLI, ``serve build`` YAML and a KubeRay RayService all build the same app from the same args.
"""

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steam_ray.config import ServeConfig
from steam_ray.serve import metrics as m
from steam_ray.serve.admission import Admission, track_replicas
from steam_ray.serve.backends import label_of
from steam_ray.serve.prediction_log import PredictionLog
from steam_ray.serve.schema import PredictRequest, PredictResponse, RequestError, parse_reviews
from steam_ray.serve.source import ModelSource, materialize, read_checkpoint_info, resolve_source

log = logging.getLogger("ray.serve")

MODEL_DEPLOYMENT = "SentimentModel"
INGRESS_DEPLOYMENT = "Ingress"
# Predictions the positive-rate gauge averages over (a drift signal, not an accuracy figure).
RATE_WINDOW = 1000


@serve.deployment(name=MODEL_DEPLOYMENT)
class SentimentModel:
    """Loads the checkpoint once; batches requests from every ingress replica."""

    def __init__(self, source: dict[str, Any], config: dict[str, Any]) -> None:
        import torch

        from steam_ray.serve.backends import Predictor, weights_fingerprint

        cfg = ServeConfig.model_validate(config)
        src = ModelSource.from_dict(source)
        local = materialize(src.path)
        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.predictor = Predictor(
            local,
            backend=cfg.backend,
            device=device,
            threads=cfg.threads or max(1, int(cfg.num_cpus)),
            max_length=cfg.max_length,
            token_budget=cfg.token_budget,
            cache_dir=cfg.cache_dir,
        )
        metrics, info = read_checkpoint_info(local)
        self.version = src.version or f"sha256-{weights_fingerprint(local)[:12]}"
        self.threshold = src.threshold  # labels: positive iff score >= threshold
        self.info = {
            "name": src.name,
            "version": self.version,
            "checkpoint": src.path,
            "ref": src.ref,
            "backend": self.predictor.backend,
            "device": device,
            "threads": self.predictor.threads,
            "max_length": cfg.max_length,
            "threshold": self.threshold,
            "metrics": src.metrics or metrics,
            "lineage": src.lineage or {k: v for k, v in info.items() if k != "config"},
        }
        batched: Any = self._batched  # @serve.batch adds the setters at runtime
        batched.set_max_batch_size(cfg.max_batch_size)
        batched.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self._recent: collections.deque[int] = collections.deque(maxlen=RATE_WINDOW)
        self._metrics = m.model_metrics()
        self._log = self._prediction_log(cfg)

    def _prediction_log(self, cfg: ServeConfig) -> PredictionLog | None:
        if not cfg.prediction_log.path:
            return None
        replica = serve.get_replica_context().replica_id.unique_id
        mt = self._metrics
        return PredictionLog(
            cfg.prediction_log,
            writer=replica,
            tokenizer=self.predictor.tokenizer,
            max_length=cfg.max_length,
            on_drop=lambda n: mt.log_dropped.inc(n),
            on_write=lambda n: mt.log_rows.inc(n),
        )

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: write the rows still buffered.
        plog: PredictionLog | None = getattr(self, "_log", None)  # None if __init__ failed
        if plog is not None:
            plog.close()

    def model_info(self) -> dict[str, Any]:
        return self.info

    async def predict(self, texts: list[str]) -> dict[str, Any]:
        out = await self._batched(texts)
        if isinstance(out, BaseException):
            raise out
        return {"version": self.version, "scores": out, "threshold": self.threshold}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list[list[str]]) -> list[list[float] | BaseException]:
        flat = [t for texts in requests for t in texts]
        try:
            scores = await asyncio.to_thread(self._score, flat)
        except Exception:
            # Isolate the failure: each request again on its own, so one bad text
            # cannot fail the requests batched beside it.
            log.exception("batch of %d requests failed; retrying them one by one", len(requests))
            return [await self._alone(texts) for texts in requests]
        out: list[list[float] | BaseException] = []
        start = 0
        for texts in requests:
            out.append(scores[start : start + len(texts)])
            start += len(texts)
        return out

    async def _alone(self, texts: list[str]) -> list[float] | BaseException:
        try:
            return await asyncio.to_thread(self._score, texts)
        except Exception as exc:
            return exc

    def _score(self, texts: list[str]) -> list[float]:
        ids = self.predictor.encode(texts)
        scores = [float(s) for s in self.predictor.scores_from_ids(ids)]
        self._metrics.batch_size.observe(len(texts))
        for row in ids:
            self._metrics.input_tokens.observe(len(row))
        labels = [label_of(s, self.threshold) for s in scores]
        positive = labels.count("positive")
        for label, n in (("positive", positive), ("negative", len(scores) - positive)):
            if n:  # Ray counters reject inc(0)
                self._metrics.predictions.inc(n, tags={"label": label})
        self._recent.extend(int(label == "positive") for label in labels)
        self._metrics.positive_rate.set(sum(self._recent) / len(self._recent))
        if self._log is not None:
            self._log.offer(texts, ids, scores, labels, self.version)
        return scores


api = FastAPI(
    title="steam_ray sentiment",
    description="Positive/negative sentiment of Steam reviews, served by Ray Serve.",
    version="1",
)


class RequestMetrics:
    """Requests, errors and latency by route and status code (every route, 404s included).

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each
    request in a task group and re-streams every response, ~28% of the ingress replica's CPU
    under overload (py-spy, benchmarks/RESULTS.md)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # replaced by the response's own status once it starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:  # a route raised: Starlette answers 500 outside this middleware
            _record(scope, 500, t0)
            raise
        # Not in a `finally`: a request cancelled by its client's disconnect is no 500.
        _record(scope, status, t0)


api.add_middleware(RequestMetrics)


def _record(scope: Scope, status: int, t0: float) -> None:
    route = scope.get("route")  # set by the router on the shared scope once matched
    path = getattr(route, "path", None) or "unmatched"
    tags = {"route": path, "method": scope["method"], "status_code": str(status)}
    mt = m.ingress_metrics()
    mt.requests.inc(tags=tags)
    if status >= 400:
        mt.errors.inc(tags=tags)
    mt.latency.observe((time.perf_counter() - t0) * 1000, tags={"route": path})


_PAGE = resources.files("steam_ray.serve").joinpath("static/index.html").read_text("utf-8")
_PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
}


# Defined before the deployments: Serve serializes them when the decorators run.
def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _overloaded() -> JSONResponse:
    detail = "overloaded: the model replicas are at capacity; retry shortly"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


class _LocalCall:
    """A method of the model held in this replica, called like a DeploymentHandle's."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        async def call() -> Any:
            out = self.fn(*args)
            return await out if inspect.isawaitable(out) else out

        return asyncio.ensure_future(call())


class _LocalModel:
    """One deployment (``serve.single_deployment``): the model lives in the ingress replica,
    one actor hop (serialization, an RPC, the model replica's event loop) fewer per request."""

    def __init__(self, source: dict[str, Any], config: dict[str, Any]) -> None:
        model = cast(Any, SentimentModel).func_or_class(source, config)
        self.predict = _LocalCall(model.predict)
        self.model_info = _LocalCall(model.model_info)


@serve.deployment(name=INGRESS_DEPLOYMENT)
@serve.ingress(api)
class Ingress:
    """HTTP: validates requests, forwards the good ones to the model deployment (or, given a
    model source instead of a handle, to the model held in this replica)."""

    def __init__(
        self, model: DeploymentHandle[Any] | dict[str, Any], config: dict[str, Any]
    ) -> None:
        self.cfg = ServeConfig.model_validate(config)
        self.single = isinstance(model, dict)
        self.model = _LocalModel(model, config) if isinstance(model, dict) else model
        share = 1 if self.single else self.cfg.ingress_replicas
        self.admission = Admission(self.cfg.max_ongoing_requests, share)
        self._tracker: asyncio.Task[None] | None = None

    def _admit(self) -> bool:
        if self._tracker is None and not self.single:  # not in __init__: no event loop yet
            app = serve.get_replica_context().app_name
            every = self.cfg.admission_refresh_s
            track = track_replicas(self.admission, app, MODEL_DEPLOYMENT, every)
            self._tracker = asyncio.get_running_loop().create_task(track)
        return self.admission.try_enter()

    @api.post(
        "/predict",
        response_model=PredictResponse,
        openapi_extra={"requestBody": _PREDICT_BODY},
        responses={400: {}, 413: {}, 422: {}},
        summary="Sentiment of each review, in input order",
    )
    async def predict(self, request: Request) -> Response:
        if not self.cfg.admission_control:
            return await self._predict(request)
        if not self._admit():  # before the body is read: a rejection costs next to nothing
            return _overloaded()
        try:
            return await self._predict(request)
        finally:
            self.admission.leave()

    async def _predict(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.cfg.max_body_bytes:
            return _error(
                413, f"request body is {declared} bytes; the limit is {self.cfg.max_body_bytes}"
            )
        try:
            reviews = parse_reviews(
                await request.body(),
                max_reviews=self.cfg.max_reviews,
                max_body_bytes=self.cfg.max_body_bytes,
                max_text_bytes=self.cfg.max_text_bytes,
            )
        except RequestError as exc:
            return _error(exc.status, exc.message)
        try:
            out = await self.model.predict.remote(reviews)
        except BackPressureError:
            return _overloaded()
        except Exception as exc:  # the model failed: a 500 that names it, counted as one
            log.exception("model call failed")
            return _error(500, f"model failed: {type(exc).__name__}")
        threshold = out.get("threshold", 0.5)  # a replica of an older version sends none
        predictions = [{"label": label_of(s, threshold), "score": s} for s in out["scores"]]
        return JSONResponse({"predictions": predictions, "model_version": out["version"]})

    @api.get("/healthz", summary="200 once the model is loaded")
    async def healthz(self) -> Response:
        info = await self._model_info()
        if isinstance(info, Response):
            return info
        return JSONResponse({"status": "ok", "model_version": info["version"]})

    @api.get(
        "/v1/model",
        summary="Name, version, metrics and lineage of the served model",
        responses={503: {}},
    )
    async def model_info(self) -> Response:
        info = await self._model_info()
        return info if isinstance(info, Response) else JSONResponse(info)

    async def _model_info(self) -> dict[str, Any] | Response:
        """The model's info, or a 503 naming why while replicas load or fail."""
        try:
            call = self.model.model_info.remote()
            info: dict[str, Any] = await asyncio.wait_for(call, self.cfg.model_info_timeout_s)
        except Exception as exc:  # no model replica yet, or it is failing
            return _error(503, f"model not ready: {type(exc).__name__}")
        return info

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(_PAGE)


def deployment_options(cfg: ServeConfig) -> dict[str, dict[str, Any]]:
    """Serve options per deployment, from the ``serve:`` config section."""
    scale = cfg.autoscaling
    model: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    }
    if scale.min_replicas == scale.max_replicas:
        model["num_replicas"] = scale.min_replicas
    else:
        model["autoscaling_config"] = {
            "min_replicas": scale.min_replicas,
            "max_replicas": scale.max_replicas,
            "target_ongoing_requests": scale.target_ongoing_requests,
            "upscale_delay_s": scale.upscale_delay_s,
            "downscale_delay_s": scale.downscale_delay_s,
            "look_back_period_s": scale.look_back_period_s,
        }
    if cfg.one_deployment:  # one deployment: the model's resources and scaling
        # Serve takes in as many requests as an ingress would; admission control, not Serve's
        # queue (whose retry backoff idles the model), holds the model to max_ongoing_requests.
        http = {
            "max_ongoing_requests": cfg.ingress_max_ongoing_requests,
            "max_queued_requests": cfg.ingress_max_queued_requests,
        }
        return {INGRESS_DEPLOYMENT: {**model, **http}}
    ingress: dict[str, Any] = {
        "num_replicas": cfg.ingress_replicas,
        "max_ongoing_requests": cfg.ingress_max_ongoing_requests,
        "max_queued_requests": cfg.ingress_max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.ingress_num_cpus},
    }
    return {MODEL_DEPLOYMENT: model, INGRESS_DEPLOYMENT: ingress}


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve app builder: ``args = {"source": ModelSource dict | "ref": {checkpoint, registry},
    "config": serve section}``."""
    cfg = ServeConfig.model_validate(args.get("config") or {})
    if "ref" in args:  # from `serve build`: resolve here, on the cluster, at deploy time
        ref = args["ref"]
        source = resolve_source(ref["checkpoint"], ref.get("registry")).to_dict()
    else:
        source = args["source"]
        ModelSource.from_dict(source)  # fail at build time on a malformed source
    opts = deployment_options(cfg)
    config = cfg.model_dump(mode="json")
    # @serve.deployment turns the classes into Deployments; mypy still sees the classes.
    model_dep: Any = SentimentModel
    ingress = cast(Any, Ingress).options(**opts[INGRESS_DEPLOYMENT])
    if cfg.one_deployment:  # the ingress loads the model itself from the source
        app: serve.Application = ingress.bind(source, config)
        return app
    model = model_dep.options(**opts[MODEL_DEPLOYMENT]).bind(source, config)
    app = ingress.bind(model, config)
    return app
