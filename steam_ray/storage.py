"""Local paths and object-store URIs (gs://, s3://) through pyarrow filesystems."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, ``file://`` URL or ``gs://``/``s3://`` URI."""
    if is_uri(path):
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs, inner
    local = path.removeprefix("file://")
    return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve())


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


def read_text(path: str) -> str:
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as f:
        data: bytes = f.read()
    return data.decode("utf-8")


def write_text(path: str, text: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(posixpath.dirname(inner), recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(text.encode("utf-8"))


def makedirs(path: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(inner, recursive=True)
