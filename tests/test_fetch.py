"""seq2seq.corpora.fetch: local and HTTP fetching, checksums, cache, unreachable hosts."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from corpus_server import closed_port_url, serve_dir

from seq2seq.corpora.fetch import (
    UnreachableError,
    fetch,
    join_location,
    location_name,
    obtain,
    sha256_file,
)
from seq2seq.errors import DataError

PAYLOAD = b"ein Hund\nzwei Katzen\n" * 5000  # ~105 kB: several read chunks
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "a b.txt").write_bytes(PAYLOAD)
    return folder


def test_locations_join_and_name():
    assert join_location("http://h/x/", "a b.gz") == "http://h/x/a%20b.gz"
    assert join_location("file:///m", "t.gz") == "file:///m/t.gz"
    assert join_location("/data/mirror", "t.gz") == "/data/mirror/t.gz"
    assert location_name("https://h/p/deu-eng.zip?x=1") == "deu-eng.zip"
    assert location_name("http://h/a%20b.txt") == "a b.txt"
    assert location_name("corpus/train.de") == "train.de"


def test_fetch_local_file_verifies_and_copies(served: Path, tmp_path: Path):
    dest = tmp_path / "out" / "copy.txt"
    got = fetch(str(served / "a b.txt"), dest, sha256=DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert (got.sha256, got.size, got.cached) == (DIGEST, len(PAYLOAD), False)
    assert sha256_file(dest) == DIGEST


def test_checksum_mismatch_names_file_and_hashes_and_keeps_nothing(served: Path, tmp_path: Path):
    dest = tmp_path / "out" / "copy.txt"
    with pytest.raises(DataError) as err:
        fetch(str(served / "a b.txt"), dest, sha256="0" * 64)
    msg = str(err.value)
    assert "copy.txt" in msg and "0" * 64 in msg and DIGEST in msg
    assert list(dest.parent.iterdir()) == []  # neither the file nor its .part


def test_fetch_over_http_reports_progress(served: Path, tmp_path: Path):
    calls = []
    with serve_dir(served) as base:
        got = fetch(
            join_location(base, "a b.txt"),
            tmp_path / "f.txt",
            sha256=DIGEST,
            progress=lambda n=1, total=None, description=None: calls.append((n, total)),
        )
    assert got.path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD))
    assert sum(n for n, _ in calls) == len(PAYLOAD) and len(calls) > 2


def test_http_404_is_a_data_error(served: Path, tmp_path: Path):
    with serve_dir(served) as base, pytest.raises(DataError, match="HTTP 404"):
        fetch(f"{base}/missing.gz", tmp_path / "m.gz")
    assert not (tmp_path / "m.gz").exists()


def test_connection_refused_names_the_url(tmp_path: Path):
    url = closed_port_url() + "/train.de.gz"
    with pytest.raises(UnreachableError) as err:
        fetch(url, tmp_path / "t.gz")
    assert url in str(err.value) and "refused" in str(err.value)
    assert err.value.fix and "mirror" in err.value.fix


def test_unresolvable_host_is_unreachable(tmp_path: Path):
    # .invalid never resolves (RFC 6761), with or without a network.
    with pytest.raises(UnreachableError, match="nonexistent.invalid.*not resolved"):
        fetch("http://nonexistent.invalid/train.de.gz", tmp_path / "t.gz", timeout=5)


def test_a_silent_server_times_out(tmp_path: Path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.gz"
        with pytest.raises(UnreachableError, match="timed out"):
            fetch(url, tmp_path / "x.gz", timeout=0.3)
    assert list(tmp_path.iterdir()) == []


def test_cache_hit_needs_no_network_and_a_bad_cache_is_ignored(served: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "t.txt").write_bytes(PAYLOAD)
    got = fetch(
        closed_port_url() + "/t.txt", tmp_path / "o1" / "t.txt", sha256=DIGEST, cache=[cache]
    )
    assert got.cached and got.path.read_bytes() == PAYLOAD
    (cache / "t.txt").write_bytes(b"tampered")
    got = fetch(str(served / "a b.txt"), tmp_path / "o2" / "t.txt", sha256=DIGEST, cache=[cache])
    assert not got.cached and got.path.read_bytes() == PAYLOAD


def test_file_urls_and_missing_files(served: Path, tmp_path: Path):
    got = fetch((served / "a b.txt").as_uri(), tmp_path / "u.txt", sha256=DIGEST)
    assert got.path.read_bytes() == PAYLOAD
    with pytest.raises(DataError, match="cannot be read"):
        fetch((served / "nope.txt").as_uri(), tmp_path / "n.txt")
    with pytest.raises(DataError, match="does not exist"):
        fetch(str(served / "nope.txt"), tmp_path / "n.txt")


def test_obtain_reads_local_files_in_place_and_downloads_urls(served: Path, tmp_path: Path):
    files = tmp_path / "files"
    local = obtain(str(served / "a b.txt"), files)
    assert local.path == served / "a b.txt" and local.sha256 == DIGEST
    assert not files.exists()  # nothing copied
    with serve_dir(served) as base:
        remote = obtain(f"{base}/a%20b.txt", files)
    assert remote.path == files / "a b.txt" and remote.sha256 == DIGEST
    with pytest.raises(DataError, match="is a folder"):
        obtain(str(served), files)
