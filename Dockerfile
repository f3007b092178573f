# One image for every Ray node (head, CPU and GPU workers) and every `ray job submit` entrypoint.
# The Ray version here equals pyproject.toml's pin and every manifest's (tests/unit/test_cluster.py).
# Builds with BuildKit and the classic builder alike (no RUN --mount, heredocs or COPY --chmod):
#   docker build -t steam-ray:0.1.0 .
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# torch: the CUDA 12.8 build, pinned to the version the Makefile pins for CPU machines.
# Why cu128: GKE's `gpu-driver-version=latest` (what cluster/gke.sh asks for) installs an R570+
# driver (CUDA 12.8+) on current GKE versions; on an older default R535/R550 driver, CUDA
# minor-version compatibility still runs it, since the wheel ships SASS for L4 (sm_89), A100
# (sm_80) and H100 (sm_90) and needs no PTX JIT. cu130 would need R580, not yet every pool's.
# The wheel bundles its own CUDA runtime (nvidia-* wheels), so the base image's CUDA is not used.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

# HF_HOME: a fixed path outside $HOME that the manifests mount a cache volume on (or an image
# can pre-fill); the Ray cluster's nodes then share or keep downloaded models across restarts.
ENV HF_HOME=/mnt/hf-cache \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER 0
RUN mkdir -p /mnt/hf-cache /home/ray/steam_ray && chown 1000:100 /mnt/hf-cache /home/ray/steam_ray
# The base image's `ray` user (uid 1000, gid 100 `users`), numeric so runAsNonRoot can verify it.
USER 1000:100

WORKDIR /home/ray/steam_ray
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

# Dependencies before the code, so a code edit does not rebuild the (large) dependency layer.
# Ray is pinned exactly in pyproject.toml and torch above; the rest resolve against both.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 steam_ray/__init__.py steam_ray/__init__.py
# hadolint ignore=DL3013
RUN pip install ".[offline]" "torch==${TORCH_VERSION}" && pip uninstall -y steam_ray

COPY --chown=1000:100 steam_ray ./steam_ray
COPY --chown=1000:100 jobs ./jobs
RUN pip install --no-deps . && python -c "import steam_ray, ray; assert ray.__version__ == '2.60.0'"
