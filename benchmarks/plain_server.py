"""The baseline a team without Ray would ship: one FastAPI + uvicorn process, the model run once
per request (no batching), same checkpoint and same /predict contract.

    python benchmarks/plain_server.py --checkpoint CKPT --port 8765 [--backend torch] [--threads 2]

``--backend torch`` is plain transformers + torch fp32; another backend reuses steam_ray's
Predictor so the comparison can separate the backend's gain from Serve's batching.
"""

from __future__ import annotations

import argparse
import os

from pydantic import BaseModel, Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Body(BaseModel):
    """Module level: with postponed annotations FastAPI resolves ``body: Body`` in the module's
    globals; a class local to main() made it a query parameter and every request a 422."""

    reviews: list[str] = Field(..., min_length=1, max_length=256)


def main() -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.backend == "torch":
        tok = AutoTokenizer.from_pretrained(args.checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint).eval()

        def scores(texts: list[str]) -> list[float]:
            enc = tok(
                texts,
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                probs = model(**enc).logits.softmax(-1)[:, 1]
            return [float(p) for p in probs]
    else:
        from steam_ray.serve.backends import Predictor

        pred = Predictor(
            args.checkpoint, backend=args.backend, threads=args.threads, max_length=args.max_length
        )

        def scores(texts: list[str]) -> list[float]:
            return [float(s) for s in pred.scores(texts)]

    app = FastAPI()

    @app.post("/predict")
    def predict(body: Body) -> dict[str, object]:  # sync: FastAPI runs it in its threadpool
        if any(not t.strip() for t in body.reviews):
            raise HTTPException(422, "empty review")
        out = scores(body.reviews)
        return {
            "predictions": [
                {"label": "positive" if s >= 0.5 else "negative", "score": s} for s in out
            ],
            "model_version": "plain",
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
