"""Print the pip arguments that install a CPU-only torch on this machine (used by `make install`).

    python3 tools/torch_cpu_args.py VERSION [INDEX_URL] [TIMEOUT_S]

PyPI's Linux torch wheels are the CUDA build (GBs of nvidia-* wheels). PyTorch publishes the
CPU build on its own index (https://download.pytorch.org/whl/cpu): where that index answers
within TIMEOUT_S seconds, print ``torch==VERSION+cpu --extra-index-url INDEX_URL``; where it
does not (offline, firewalled, a local mirror only), print ``torch==VERSION`` so pip uses the
configured index / find-links, and say so on stderr. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request

DEFAULT_INDEX = "https://download.pytorch.org/whl/cpu"


def _probe(index: str, timeout: float, result: list[bool]) -> None:
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=timeout) as resp:
            result.append(200 <= resp.status < 300 and b"torch-" in resp.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):  # refused, timeout, DNS, bad URL
        result.append(False)


def reachable(index: str, timeout: float) -> bool:
    """Whether ``index`` lists torch wheels, decided within ``timeout`` seconds overall.

    urlopen's timeout does not cover DNS (a blocked resolver can take 30+ s), so the probe
    runs in a daemon thread that is abandoned when the time is up.
    """
    result: list[bool] = []
    thread = threading.Thread(target=_probe, args=(index, timeout, result), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 3:
        print(__doc__, file=sys.stderr)
        return 2
    version = argv[0]
    index = argv[1] if len(argv) > 1 else DEFAULT_INDEX
    timeout = float(argv[2]) if len(argv) > 2 else 5.0
    if reachable(index, timeout):
        print(f"torch=={version}+cpu --extra-index-url {index}")
    else:
        print(
            f"torch CPU index {index} not reachable in {timeout:g}s: installing "
            f"torch=={version} from the configured index/find-links",
            file=sys.stderr,
        )
        print(f"torch=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
