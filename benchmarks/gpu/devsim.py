"""A CPU stand-in for the GPU machine's Python, to try the carry here before a lease.

    .venv/bin/python benchmarks/gpu/devsim.py /tmp/devsim      # then, with a 3.11 carry:
    PY_VERSION=3.11 CARRY=.gpu-311 bash benchmarks/gpu/pack.sh
    DRY_RUN=1 UNPACK=1 CARRY=.gpu-311 PYTHON=/tmp/devsim/bin/python bash benchmarks/gpu/run.sh

Makes a virtual environment (the local venv's interpreter) whose site-packages link to the
local venv's copies of only the packages the device image has (KINDS.md's list, 2026-11-17):
nothing of Ray, pydantic, FastAPI, W&B, datasets, the packaged MiniLM, steam_ray itself. A
run then imports Ray and the rest from the unpacked carry alone, as on the device, so a
package missing from requirements-device.txt or removed by pack.sh's slim() fails here.
What it cannot show: the device's own versions (torch 2.11 + CUDA, transformers 5.17, ...).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: /work/.library/device/KINDS.md, "Python packages already there" (nvidia-h200, 2026-11-17).
_DEVICE_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numpy numpyro onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
"""
DEVICE_PACKAGES = tuple(_DEVICE_LIST.split())
#: Needs of the local venv's newer copies of those (huggingface-hub 2.x here, 1.33 there).
LOCAL_NEEDS = ("httpx2", "httpcore2", "truststore", "h2", "hpack", "hyperframe")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level(dist: metadata.Distribution) -> set[str]:
    """The site-packages entries a distribution installed (modules, packages, its dist-info)."""
    names = set()
    for f in dist.files or []:
        first = Path(f).parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            names.add(first)
    return names


def main(target: Path) -> None:
    here = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = here / "site-packages"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(target)], check=True)
    dest = target / "lib" / here.name / "site-packages"
    wanted = {canonical(n) for n in (*DEVICE_PACKAGES, *LOCAL_NEEDS)}
    linked = 0
    for dist in metadata.distributions(path=[str(site)]):
        if canonical(dist.metadata["Name"] or "") not in wanted:
            continue
        for entry in top_level(dist):
            src, dst = site / entry, dest / entry
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
                linked += 1
    print(f"devsim: {target} ({linked} entries of the device's packages from {site})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/devsim"))
