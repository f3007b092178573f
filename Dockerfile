# One image for every Ray node (head and workers) and for `ray job submit` entrypoints.
# The Ray version here, in pyproject.toml and in cluster manifests is the same: 2.60.0.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

ENV HF_HOME=/home/ray/.cache/huggingface \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1

WORKDIR /home/ray/steam_ray
# Dependencies first so code edits don't invalidate the (large) dependency layer.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users steam_ray/__init__.py steam_ray/__init__.py
RUN pip install --no-cache-dir ".[offline]" && pip uninstall -y steam_ray
COPY --chown=ray:users steam_ray ./steam_ray
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir --no-deps .
