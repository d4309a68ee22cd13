"""Fetching corpus files: local paths, file:// and http(s) URLs, mirrors, pinned sha256.

A download streams into a hidden `.part` file next to its destination and is renamed only once
it is complete and its checksum matched, so a failed, interrupted or tampered download never
leaves a file behind under the final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from seq2seq.errors import DataError

Progress = Callable[..., None]
CHUNK_BYTES = 1 << 16
DEFAULT_TIMEOUT = 30.0
URL_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class FetchedFile:
    """A corpus input available locally: `path` is read, `source` is where it came from."""

    path: Path
    source: str
    sha256: str
    size: int
    cached: bool = False


class UnreachableError(DataError):
    """A URL's host could not be reached (DNS failure, refused connection, timeout)."""

    def __init__(self, url: str, reason: str, fix: str | None = None) -> None:
        super().__init__(
            f"cannot reach {url} ({reason})",
            fix
            or "check the network connection, or use a mirror (a local directory or URL "
            "holding the same files)",
        )
        self.url = url
        self.reason = reason


def is_url(location: str) -> bool:
    """True for http://, https:// and file:// locations; anything else is a local path."""
    return urllib.parse.urlsplit(location).scheme.lower() in URL_SCHEMES


def join_location(base: str, name: str) -> str:
    """`name` inside `base`, a URL (http, https, file) or a local directory."""
    if is_url(base):
        return base.rstrip("/") + "/" + urllib.parse.quote(name)
    return str(Path(base).expanduser() / name)


def location_name(location: str) -> str:
    """The file name at the end of a URL or path ('https://x/y/deu-eng.zip' -> 'deu-eng.zip')."""
    path = urllib.parse.urlsplit(location).path if is_url(location) else location
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return Path(name).name or "download"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    location: str,
    dest: Path,
    *,
    sha256: str | None = None,
    cache: Sequence[Path] = (),
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> FetchedFile:
    """Copy or download `location` (path or URL) to `dest`, verifying `sha256` when given.

    With a known `sha256`, a file of the same name and checksum in one of the `cache` folders
    (e.g. the previous run's raw/files) is copied instead of downloading again.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if sha256:
        for folder in cache:
            hit = Path(folder) / dest.name
            if hit.is_file() and sha256_file(hit) == sha256:
                _install_copy(hit, dest)
                return FetchedFile(dest, location, sha256, dest.stat().st_size, cached=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        with _open(location, timeout) as (stream, total):
            digest, size = _stream_to(stream, part, location, total, progress, dest.name)
        if sha256 and digest != sha256:
            raise DataError(
                f"checksum mismatch for {dest.name} from {location}: expected sha256 {sha256}, "
                f"got {digest}; the file was discarded",
                "the download or mirror is corrupt or not the pinned release: fetch the file "
                "again or fix the mirror",
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return FetchedFile(dest, location, digest, size)


def obtain(
    location: str,
    files_dir: Path,
    name: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> FetchedFile:
    """A URL is downloaded into `files_dir`; a local file is read in place (checksummed only)."""
    if is_url(location):
        return fetch(
            location,
            files_dir / (name or location_name(location)),
            timeout=timeout,
            progress=progress,
        )
    path = Path(location).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{location} {what}", "check the path (relative to the project folder)")
    return FetchedFile(path, str(path.resolve()), sha256_file(path), path.stat().st_size)


def _install_copy(src: Path, dest: Path) -> None:
    part = dest.with_name(f".{dest.name}.part")
    try:
        shutil.copyfile(src, part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


@contextmanager
def _open(location: str, timeout: float) -> Iterator[tuple[BinaryIO, int | None]]:
    """Yield (binary stream, size in bytes or None) for a path or URL; errors -> DataError."""
    if not is_url(location):
        path = Path(location).expanduser()
        if not path.is_file():
            raise DataError(f"{location} does not exist", "check the path or the mirror folder")
        with open(path, "rb") as f:
            yield f, path.stat().st_size
        return
    try:
        response = urllib.request.urlopen(location, timeout=timeout)  # noqa: S310 (schemes checked)
    except urllib.error.HTTPError as err:
        raise DataError(
            f"{location}: HTTP {err.code} {err.reason}", "check the URL or the mirror's contents"
        ) from None
    except urllib.error.URLError as err:
        raise _url_error(location, err.reason) from None
    except (TimeoutError, ConnectionError) as err:
        raise _url_error(location, err) from None
    with response:
        length = response.headers.get("Content-Length")
        yield response, int(length) if length and length.isdigit() else None


def _url_error(location: str, reason: object) -> DataError:
    if urllib.parse.urlsplit(location).scheme.lower() == "file":
        return DataError(f"{location} cannot be read ({reason})", "check the file URL")
    if isinstance(reason, socket.gaierror):
        return UnreachableError(location, f"host name not resolved: {reason.strerror}")
    if isinstance(reason, TimeoutError):
        return UnreachableError(location, "timed out")
    if isinstance(reason, OSError) and reason.strerror:
        return UnreachableError(location, reason.strerror.lower())
    return UnreachableError(location, str(reason))


def _stream_to(
    stream: BinaryIO,
    part: Path,
    location: str,
    total: int | None,
    progress: Progress | None,
    name: str,
) -> tuple[str, int]:
    """Copy `stream` into `part`, hashing on the way; returns (sha256 hex, bytes)."""
    digest, size = hashlib.sha256(), 0
    if progress:
        progress(0, total=total, description=name)
    with open(part, "wb") as out:
        while True:
            try:
                block = stream.read(CHUNK_BYTES)
            except (TimeoutError, ConnectionError) as err:
                raise _url_error(location, err) from None
            if not block:
                break
            out.write(block)
            digest.update(block)
            size += len(block)
            if progress:
                progress(len(block))
    if total is not None and size != total:
        raise DataError(f"{location}: download incomplete ({size} of {total} bytes)", "try again")
    return digest.hexdigest(), size
