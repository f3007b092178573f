"""Local paths and object-store URIs (gs://, s3://) through pyarrow filesystems."""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from steam_ray.errors import ConfigError

# A bucket URI whose in-filesystem path we can compute exactly as Arrow's ``from_uri`` does
# (bucket + path, trailing slashes removed): no percent-escapes, query, user or port. Anything
# else goes to ``from_uri`` as a whole, uncached, so its parsing and errors stay Arrow's.
_PLAIN_BUCKET_URI = re.compile(r"(gs|gcs|s3)://([a-z0-9][a-z0-9._-]*)(/[A-Za-z0-9._~/=+,-]*)?")


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


#: The variable Google's own clients read to talk to a GCS emulator (``http://host:port``);
#: Arrow's GCS filesystem does not, so ``gs://`` URIs get the endpoint from it here.
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


@functools.cache
def _filesystem(scheme: str, bucket: str, gcs_emulator: str = "") -> pafs.FileSystem:
    """One filesystem per (scheme, bucket): building one reads credentials (and for S3 may ask
    the bucket's region over the network), far too slow to repeat per file access."""
    if scheme == "file":
        return pafs.LocalFileSystem()
    if gcs_emulator and scheme in ("gs", "gcs"):
        url = gcs_emulator if "://" in gcs_emulator else f"http://{gcs_emulator}"
        web, host = url.split("://", 1)
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=host.rstrip("/"), scheme=web)
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
    return fs


def clear_cache() -> None:
    """Forget the cached filesystems, e.g. after changing credentials or endpoint variables
    (``GOOGLE_APPLICATION_CREDENTIALS``, ``AWS_*``): Arrow reads them when it builds one."""
    _filesystem.cache_clear()


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, ``file://`` URL or ``gs://``/``s3://`` URI."""
    if is_uri(path):
        plain = _PLAIN_BUCKET_URI.fullmatch(path)
        if plain is None:
            fs, inner = pafs.FileSystem.from_uri(path)
            return fs, inner
        scheme, bucket, rest = plain.groups()
        emulator = os.environ.get(GCS_EMULATOR_ENV, "")
        return _filesystem(scheme, bucket, emulator), (bucket + (rest or "")).rstrip("/")
    local = path.removeprefix("file://")
    return _filesystem("file", ""), str(Path(local).expanduser().resolve())


def for_ray(path: str) -> tuple[str, pafs.FileSystem | None]:
    """(path, filesystem) to hand Ray (Data reads, Train/Tune ``storage_path``): for a URI our
    filesystem and the path inside it, so Ray talks to the same store (an emulator included);
    a local path as it is, with Ray's own local handling."""
    if not is_uri(path):
        return path, None
    fs, inner = resolve(path)
    return inner, fs


def ray_storage(storage_path: str) -> dict[str, Any]:
    """``storage_path``/``storage_filesystem`` for a Ray Train or Tune ``RunConfig``."""
    where, fs = for_ray(storage_path)
    return {"storage_path": where, "storage_filesystem": fs}


def user_path(like: str, fs_path: str) -> str:
    """A path inside ``resolve(like)``'s filesystem, addressed the way the user addressed
    ``like``: ``gs://bucket/...`` for a URI, the plain filesystem path for a local one."""
    if is_uri(like):
        scheme = like.split("://", 1)[0]
        return f"{scheme}://{fs_path.lstrip('/')}"
    return fs_path


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return posixpath.join(base, *parts)
    return str(Path(base).expanduser().joinpath(*parts))


def exists(path: str) -> bool:
    fs, inner = resolve(path)
    return bool(fs.get_file_info(inner).type != pafs.FileType.NotFound)


def is_dir(path: str) -> bool:
    fs, inner = resolve(path)
    return bool(fs.get_file_info(inner).type == pafs.FileType.Directory)


def read_text_at(fs: pafs.FileSystem, inner: str) -> str:
    with fs.open_input_stream(inner) as f:
        data: bytes = f.read()
    return data.decode("utf-8")


def write_text_at(fs: pafs.FileSystem, inner: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``inner`` in ``fs``, creating its parent directories."""
    fs.create_dir(posixpath.dirname(inner), recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(text.encode("utf-8"))


def read_text(path: str) -> str:
    return read_text_at(*resolve(path))


def write_text(path: str, text: str) -> None:
    write_text_at(*resolve(path), text)


# Our JSON files: UTF-8, ``indent=2`` unless asked otherwise, values JSON lacks (datetimes,
# paths) as strings, one trailing newline.
def json_text(data: Any, *, indent: int | None = 2) -> str:
    return json.dumps(data, indent=indent, default=str) + "\n"


def read_json_at(fs: pafs.FileSystem, inner: str) -> Any:
    return json.loads(read_text_at(fs, inner))


def write_json_at(fs: pafs.FileSystem, inner: str, data: Any, *, indent: int | None = 2) -> None:
    write_text_at(fs, inner, json_text(data, indent=indent))


def read_json(path: str) -> Any:
    return read_json_at(*resolve(path))


def write_json(path: str, data: Any, *, indent: int | None = 2) -> None:
    write_json_at(*resolve(path), data, indent=indent)


def makedirs(path: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(inner, recursive=True)


#: Local paths under these roots (``os.pathsep``-separated) are on a filesystem every Ray node
#: mounts (NFS, Filestore, GCS FUSE); ``1``/``true`` declares every local path shared.
SHARED_FS_ENV = "STEAM_RAY_SHARED_FS"


def declared_shared(path: str) -> bool:
    """Whether ``STEAM_RAY_SHARED_FS`` declares the local ``path`` to be on a shared mount."""
    value = os.environ.get(SHARED_FS_ENV, "").strip()
    if value.lower() in {"1", "true", "yes"}:
        return True
    local = Path(resolve(path)[1])
    roots = [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p]
    return any(local == root or root in local.parents for root in roots)


def require_shared_storage(path: str, what: str, *, shared_fs: bool = False) -> None:
    """Refuse a node-local ``path`` on a multi-node cluster: more than one node now, or worker
    groups its autoscaler can add (a job submitted to a KubeRay cluster scaled to zero sees
    one node, the head, and its tasks then run on workers that do not exist yet).

    Ray Train/Tune workers and Ray Data tasks run on any node and write (or read) there: a local
    path would scatter outputs over the nodes' disks. ``gs://``/``s3://`` URIs, ``shared_fs`` and
    paths declared by ``STEAM_RAY_SHARED_FS`` pass without asking the cluster.
    """
    from steam_ray import cluster

    if is_uri(path) or shared_fs or declared_shared(path):
        return
    shape = cluster.shape()
    if shape.multi_node:
        nodes = f"has {shape.nodes} nodes" if shape.nodes > 1 else "autoscales worker nodes"
        raise ConfigError(
            f"{what} {path!r} is a local path but the Ray cluster {nodes}: each node "
            "would see only its own files. Use gs:// or s3://, or a mount every node shares "
            f"(then pass --shared-fs or set {SHARED_FS_ENV}=<mount root>)."
        )


# -- writing an output aside, then swapping it in --------------------------------------------
# Every stage that writes a directory (data prepare, evaluate, predict, monitor) writes into a
# staging directory beside it and publishes with one rule, so a failed run never destroys the
# last good output and a reader never sees a half-new one.
def staging_dir(output: str) -> str:
    """A fresh directory beside ``output`` (same filesystem/bucket) for a run's files."""
    return f"{output.rstrip('/')}.staging-{uuid.uuid4().hex[:8]}"


def move_at(fs: pafs.FileSystem, src: str, dst: str) -> None:
    try:
        fs.move(src, dst)  # a rename on local disks
    except (NotImplementedError, OSError):
        # Object stores without directory moves: copy, then delete.
        if fs.get_file_info(src).type == pafs.FileType.Directory:
            fs.create_dir(dst, recursive=True)
            pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs)
            fs.delete_dir(src)
        else:
            pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs)
            fs.delete_file(src)


def delete_at(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def _entries(fs: pafs.FileSystem, inner: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def publish(staging: str, output: str, marker: str, owns: Callable[[str], bool]) -> None:
    """Replace ``output``'s entries that ``owns`` accepts with every entry of ``staging``.

    ``marker`` (a manifest, summary or metrics file: what readers trust) leaves first and
    arrives last, so a reader never sees it next to a mix of old and new files. Old entries
    wait in ``OUTPUT.old-*`` until the new ones are in (a crash mid-swap leaves them there,
    not lost). Entries ``owns`` rejects stay.
    """
    fs, out = resolve(output)
    _, stage = resolve(staging)
    fs.create_dir(out, recursive=True)

    def marker_first(name: str) -> bool:
        return name != marker

    old = sorted((n for n in _entries(fs, out) if n == marker or owns(n)), key=marker_first)
    aside = f"{out.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
    if old:
        fs.create_dir(aside, recursive=True)
    for name in old:
        move_at(fs, f"{out}/{name}", f"{aside}/{name}")
    for name in sorted(_entries(fs, stage), key=marker_first, reverse=True):
        move_at(fs, f"{stage}/{name}", f"{out}/{name}")
    if old:
        fs.delete_dir(aside)
    delete_at(fs, stage)
