"""Regenerate (or check) cluster/rayservice.yaml's serveConfigV2 with ``steam-ray serve build``.

    python cluster/serve_config.py          # rewrite it in place (make cluster-serve-config)
    python cluster/serve_config.py --check  # exit 1 if the checked-in copy is stale

The inputs are fixed here (overridable by environment) so the checked-in copy is reproducible:
the checkpoint reference, the model registry and the steam_ray config. The RayService serves the
registry's ``best``, which cluster/rayjob-tune.yaml registers (``--registry``), resolved when
the app is deployed; ``SERVE_CHECKPOINT=NAME:VERSION`` pins one version (not for committing:
tests/unit/test_cluster.py checks the copy against these defaults).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parent
MANIFEST = CLUSTER / "rayservice.yaml"
KEY_LINE = "  serveConfigV2: |"
CHECKPOINT = os.environ.get("SERVE_CHECKPOINT", "best")
REGISTRY = os.environ.get("SERVE_REGISTRY", "gs://steam-ray-data/registry")
CONFIG = os.environ.get("SERVE_CONFIG", "cluster")


def build() -> str:
    """The Serve config YAML that ``steam-ray serve build`` writes for the inputs above."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "serve.yaml"
        cmd = [
            *(sys.executable, "-m", "steam_ray.cli", "serve", "build"),
            *("--checkpoint", CHECKPOINT, "--registry", REGISTRY, "--config", CONFIG),
            *("-o", str(out)),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"`{' '.join(cmd[2:])}` failed:\n{proc.stdout}{proc.stderr}")
        return out.read_text()


def split(manifest: str) -> tuple[str, str, str]:
    """(text before the block, the block's YAML dedented, text after it)."""
    lines = manifest.splitlines(keepends=True)
    start = lines.index(KEY_LINE + "\n") + 1
    end = start
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    block = "".join(line[4:] if line.strip() else "\n" for line in lines[start:end])
    return "".join(lines[:start]), block, "".join(lines[end:])


def splice(manifest: str, config: str) -> str:
    before, _, after = split(manifest)
    block = "".join(f"    {line}" if line.strip() else "\n" for line in config.splitlines(True))
    return before + block.rstrip("\n") + "\n" + after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the block is stale")
    args = parser.parse_args()
    manifest = MANIFEST.read_text()
    generated = build()
    if args.check:
        current = split(manifest)[1]
        if yaml.safe_load(current) != yaml.safe_load(generated):
            sys.exit(
                f"{MANIFEST.name}: serveConfigV2 is stale; `steam-ray serve build` gives:\n"
                f"{generated}\nrun `make cluster-serve-config`"
            )
        print(f"{MANIFEST.name}: serveConfigV2 is up to date")
        return
    MANIFEST.write_text(splice(manifest, generated))
    print(f"wrote serveConfigV2 into {MANIFEST}")


if __name__ == "__main__":
    main()
