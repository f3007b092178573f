"""The HTTP contract of ``POST /predict`` and the validation of raw request bodies.

Validation runs in the ingress before anything reaches the model's batch, so a bad request is
answered alone (4xx with a message) and never shares a batch with good ones.

``PredictRequest`` holds every rule a body's JSON must follow; ``parse_reviews`` checks the raw
bytes (size, UTF-8, JSON syntax), validates the JSON with the model and turns the model's first
error into the status and message the API answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

# The per-request limits come from the serve config, so they reach the validators through the
# validation context (keys of the ServeConfig fields); without a context they are not checked.
_TOO_LARGE = frozenset({"too_many_reviews", "review_too_large"})  # 413; the other errors: 422


def _limit(info: ValidationInfo, name: str) -> int | None:
    limit: int | None = (info.context or {}).get(name)
    return limit


def _review_text(text: str, info: ValidationInfo) -> str:
    """One review: not blank, valid Unicode, at most ``max_text_bytes`` of UTF-8."""
    if not text.strip():
        raise PydanticCustomError("blank_review", "is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # A lone surrogate ("\\ud800") parses as JSON but no tokenizer can take it.
        raise PydanticCustomError(
            "lone_surrogate", "is not valid Unicode (lone surrogate)"
        ) from None
    limit = _limit(info, "max_text_bytes")
    if limit is not None and size > limit:
        raise PydanticCustomError(
            "review_too_large",
            "is {size} bytes; the limit is {limit} per review",
            {"size": size, "limit": limit},
        )
    return text


class PredictRequest(BaseModel):
    # strict: a review must be a JSON string (no coercion of numbers); no other fields.
    model_config = ConfigDict(extra="forbid", strict=True)

    reviews: list[Annotated[str, AfterValidator(_review_text)]] = Field(
        ...,
        min_length=1,
        description="Review texts, one prediction each, answered in input order.",
        examples=[["Best co-op game I have played in years.", "Crashes every ten minutes."]],
    )

    @field_validator("reviews", mode="before")
    @classmethod
    def _at_most_max_reviews(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the items are validated: an oversized request is refused as a whole.
        limit = _limit(info, "max_reviews")
        if isinstance(value, list) and limit is not None and len(value) > limit:
            raise PydanticCustomError(
                "too_many_reviews",
                '"reviews" has {count} items; at most {limit} per request',
                {"count": len(value), "limit": limit},
            )
        return value


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
    payload = _json_of(body, max_body_bytes)
    limits = {"max_reviews": max_reviews, "max_text_bytes": max_text_bytes}
    try:
        request = PredictRequest.model_validate(payload, context=limits)
    except ValidationError as exc:
        raise _request_error(exc.errors()) from None
    return request.reviews


def _json_of(body: bytes, max_body_bytes: int) -> Any:
    """The parsed JSON of a body within the size limit: the checks that come before the model."""
    if len(body) > max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    if not body.strip():
        raise RequestError(400, 'empty body: send JSON like {"reviews": ["text", ...]}')
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"invalid JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None


def _request_error(errors: list[ErrorDetails]) -> RequestError:
    """The first problem of a body, in the order a client would fix them: the body's type, the
    missing field, unknown fields, then "reviews" itself (its type, size, first bad item)."""
    first = errors[0]
    if first["type"] == "model_type":
        return RequestError(422, f"body must be a JSON object, got {_kind(first['input'])}")
    if first["type"] == "missing":
        return RequestError(422, 'missing field "reviews" (a list of review texts)')
    extra = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if extra:
        return RequestError(422, f"unknown field(s): {', '.join(map(repr, extra))}")
    return _reviews_error(first)


def _reviews_error(error: ErrorDetails) -> RequestError:
    """A ``reviews`` error: the list's own (loc ``reviews``) or one item's (``reviews``, i)."""
    status = 413 if error["type"] in _TOO_LARGE else 422
    kind = _kind(error["input"])
    if len(error["loc"]) == 1:
        message = {
            "list_type": f'"reviews" must be a list of strings, got {kind}',
            "too_short": '"reviews" is empty: send at least one review',
        }.get(error["type"], error["msg"])
        return RequestError(status, message)
    item = f"reviews[{error['loc'][1]}]"
    if error["type"] == "string_type":
        return RequestError(status, f"{item} must be a string, got {kind}")
    return RequestError(status, f"{item} {error['msg']}")


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
