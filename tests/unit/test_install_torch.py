"""`make install` on a CPU-only machine: torch's CPU build from PyTorch's CPU index where it
answers, the configured index / find-links where it does not, and never a hang."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "torch_cpu_args.py"


def _args(*argv: str) -> tuple[str, float]:
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(TOOL), *argv], capture_output=True, text=True, check=True
    )
    return out.stdout.strip(), time.monotonic() - t


@pytest.fixture
def cpu_index(tmp_path: Path) -> Iterator[str]:
    """A local PEP 503 page listing a torch CPU wheel (what download.pytorch.org serves)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text(
        '<a href="torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl">'
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl</a>"
    )

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(tmp_path), **kw)  # type: ignore[arg-type]

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_cpu_index_used_where_reachable(cpu_index: str) -> None:
    out, _ = _args("2.13.0", cpu_index, "10")
    assert out == f"torch==2.13.0+cpu --extra-index-url {cpu_index}"


def test_unreachable_index_falls_back_to_configured_index() -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, _ = _args("2.13.0", f"http://127.0.0.1:{port}/cpu", "5")
    assert out == "torch==2.13.0"


def test_silent_index_does_not_hang() -> None:
    """A host that accepts and never answers (a black-holing firewall) costs the timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        out, elapsed = _args("2.13.0", f"http://127.0.0.1:{port}/cpu", "2")
    assert out == "torch==2.13.0"
    # Generous: interpreter start-up alone takes seconds on the loaded CI host.
    assert elapsed < 60


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_install_installs_torch_with_the_probed_args(tmp_path: Path) -> None:
    """`make -n` (dry run, installs nothing): both pip calls of a CPU install use the probe."""
    out = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path}/venv", "HAS_GPU="],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tools/torch_cpu_args.py 2.13.0 https://download.pytorch.org/whl/cpu" in out
    pip_lines = [ln for ln in out.splitlines() if "pip install" in ln and "--upgrade" not in ln]
    assert len(pip_lines) == 2 and all("$torch_args" in ln for ln in pip_lines)
