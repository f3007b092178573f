"""The HTTP contract of ``POST /predict`` and the validation of raw request bodies.

Validation runs in the ingress before anything reaches the model's batch, so a bad request is
answered alone (4xx with a message) and never shares a batch with good ones.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    reviews: list[str] = Field(
        ...,
        min_length=1,
        description="Review texts, one prediction each, answered in input order.",
        examples=[["Best co-op game I have played in years.", "Crashes every ten minutes."]],
    )


class Prediction(BaseModel):
    label: Literal["positive", "negative"]
    score: float = Field(..., ge=0.0, le=1.0, description="P(positive).")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str


class RequestError(Exception):
    """A client error: HTTP ``status`` and a message that says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_reviews(
    body: bytes, *, max_reviews: int, max_body_bytes: int, max_text_bytes: int
) -> list[str]:
    """The review texts of a raw ``/predict`` body, or a ``RequestError`` naming the problem."""
    if len(body) > max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    if not body.strip():
        raise RequestError(400, 'empty body: send JSON like {"reviews": ["text", ...]}')
    try:
        payload: Any = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"invalid JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {_kind(payload)}")
    if "reviews" not in payload:
        raise RequestError(422, 'missing field "reviews" (a list of review texts)')
    extra = sorted(set(payload) - {"reviews"})
    if extra:
        raise RequestError(422, f"unknown field(s): {', '.join(map(repr, extra))}")
    reviews = payload["reviews"]
    if not isinstance(reviews, list):
        raise RequestError(422, f'"reviews" must be a list of strings, got {_kind(reviews)}')
    if not reviews:
        raise RequestError(422, '"reviews" is empty: send at least one review')
    if len(reviews) > max_reviews:
        raise RequestError(
            413, f'"reviews" has {len(reviews)} items; at most {max_reviews} per request'
        )
    for i, text in enumerate(reviews):
        if not isinstance(text, str):
            raise RequestError(422, f"reviews[{i}] must be a string, got {_kind(text)}")
        if not text.strip():
            raise RequestError(422, f"reviews[{i}] is empty")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate ("\\ud800") parses as JSON but no tokenizer can take it.
            raise RequestError(422, f"reviews[{i}] is not valid Unicode (lone surrogate)") from None
        if size > max_text_bytes:
            raise RequestError(
                413, f"reviews[{i}] is {size} bytes; the limit is {max_text_bytes} per review"
            )
    return reviews


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
