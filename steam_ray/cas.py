"""Compare-and-swap of one small object on GCS: read it with its generation, write it back
only if that generation is still the live one (GCS ``ifGenerationMatch`` preconditions).

The registry's ``best`` pointer moves through this, so two writers can never both move it
from the same state: the second write is refused (HTTP 412) and its writer re-reads and
decides again. Talks to GCS through google-cloud-storage, which (unlike Arrow) has these
preconditions; ``STORAGE_EMULATOR_HOST`` points it at an emulator, as it does Arrow via
``steam_ray.storage``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from steam_ray.errors import ConfigError, SteamRayError
from steam_ray.storage import GCS_EMULATOR_ENV

#: The generation to pass for "create only if absent" (and what an absent object reads as).
ABSENT = 0
SCHEMES = ("gs://", "gcs://")


class PreconditionFailed(SteamRayError):
    """A conditional write lost: the object's live generation is not the one it was read at."""


def supports(uri: str) -> bool:
    """Whether ``uri`` is on a store these conditional writes work on (GCS)."""
    return uri.startswith(SCHEMES)


@functools.cache
def _client(emulator: str) -> Any:
    from google.cloud import storage as gcs

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return gcs.Client(project="steam-ray", credentials=anonymous)
    # The default credentials (Workload Identity on GKE); project=None: object reads and
    # writes need none, and inferring one fails where the environment names none.
    return gcs.Client(project=None)


def _blob(uri: str) -> Any:
    if not supports(uri):
        raise ConfigError(f"{uri}: conditional writes need a gs:// URI")
    bucket, _, name = uri.split("://", 1)[1].partition("/")
    if not bucket or not name:
        raise ConfigError(f"{uri}: not a gs://BUCKET/OBJECT URI")
    return _client(os.environ.get(GCS_EMULATOR_ENV, "")).bucket(bucket).blob(name)


def read_with_generation(uri: str) -> tuple[str | None, int]:
    """(text, generation) of the object at ``uri``; ``(None, ABSENT)`` if there is none.

    One media download: its response headers carry the generation of exactly the bytes read.
    """
    from google.api_core import exceptions

    blob = _blob(uri)
    try:
        data: bytes = blob.download_as_bytes()
    except exceptions.NotFound:
        return None, ABSENT
    return data.decode("utf-8"), int(blob.generation)


def write_if_generation(uri: str, text: str, generation: int) -> int:
    """Write ``text`` to ``uri`` only if its live generation is ``generation`` (``ABSENT``:
    only if there is no object); returns the new generation. Raises PreconditionFailed."""
    from google.api_core import exceptions

    blob = _blob(uri)
    try:
        blob.upload_from_string(
            text.encode("utf-8"),
            content_type="application/json",
            if_generation_match=generation,
        )
    except exceptions.PreconditionFailed as exc:
        raise PreconditionFailed(
            f"{uri} changed since it was read (generation {generation} is no longer live)"
        ) from exc
    return int(blob.generation)
