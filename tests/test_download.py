"""Downloads (served from a loopback HTTP server started here) and safe tar extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neuralab.data.dataset import DataError
from neuralab.data.download import Resource, extract_tar, fetch

PAYLOAD = b"neuralab test payload\n" * 100


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(folder, base URL): files put in folder are served on 127.0.0.1 (ephemeral port)."""
    folder = tmp_path / "served"
    folder.mkdir()
    for name in ("no_proxy", "NO_PROXY"):  # a proxy must never see loopback test traffic
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def resource(*urls: str, data: bytes = PAYLOAD, size: int | None = None) -> Resource:
    return Resource("file.bin", tuple(urls), md5(data), size if size is not None else len(data))


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_from_loopback_server(served, tmp_path: Path, capsys) -> None:
    folder, base = served
    (folder / "file.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "data" / "mnist"
    path = fetch(resource(base + "file.bin"), dest, download=True)
    assert path == dest / "file.bin" and path.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["file.bin"]  # no .part left behind
    assert f"mnist/file.bin from {base}file.bin" in capsys.readouterr().err


def test_falls_back_to_mirror_when_first_url_404s(served, tmp_path: Path) -> None:
    folder, base = served
    (folder / "mirror.bin").write_bytes(PAYLOAD)
    path = fetch(resource(base + "absent.bin", base + "mirror.bin"), tmp_path, download=True)
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_no_file(served, tmp_path: Path, fault_table) -> None:
    folder, base = served
    (folder / "file.bin").write_bytes(b"not the canonical bytes")
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as error:
        fetch(resource(base + "file.bin", base + "gone.bin"), dest, download=True)
    message = str(error.value)
    assert md5(PAYLOAD) in message and md5(b"not the canonical bytes") in message
    assert base + "file.bin" in message and "HTTP 404" in message  # every URL, with its failure
    assert leftovers(dest) == []
    fault_table(
        "download: a different file served (checksum mismatch), mirror 404",
        1,
        "DataError lists every URL with its failure, expected and actual MD5; no file left",
    )


def test_oversized_download_is_cut_off(served, tmp_path: Path, fault_table) -> None:
    folder, base = served
    (folder / "file.bin").write_bytes(PAYLOAD * 2)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(resource(base + "file.bin"), tmp_path, download=True)
    assert leftovers(tmp_path) == ["served"]
    fault_table(
        "download: body larger than the expected size",
        1,
        "cut off at the size, refused by checksum; no file left",
    )


def test_file_url(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    path = fetch(resource(source.as_uri()), tmp_path / "dest", download=True)
    assert path.read_bytes() == PAYLOAD


def test_present_file_is_verified_without_network(tmp_path: Path) -> None:
    (tmp_path / "file.bin").write_bytes(PAYLOAD)

    def no_network(url: str, timeout: float):
        raise AssertionError("the network must not be touched")

    assert fetch(resource("http://unused/"), tmp_path, download=True, opener=no_network).exists()


def test_corrupted_file_is_reported_and_kept(tmp_path: Path, fault_table) -> None:
    truncated = PAYLOAD[:100]
    (tmp_path / "file.bin").write_bytes(truncated)
    with pytest.raises(DataError) as error:
        fetch(resource("http://unused/"), tmp_path, download=True)
    message = str(error.value)
    assert str(tmp_path / "file.bin") in message
    assert md5(PAYLOAD) in message and md5(truncated) in message
    assert f"{len(PAYLOAD):,} bytes" in message and "100 bytes" in message
    assert "delete it" in message and "replace it" in message
    assert (tmp_path / "file.bin").read_bytes() == truncated  # never delete user files
    fault_table(
        "archive on disk truncated",
        1,
        "DataError names the path, expected/actual MD5 and size, and the fix; the file is kept",
    )


def test_bit_flipped_file_is_reported_and_kept(tmp_path: Path, fault_table) -> None:
    flipped = bytearray(PAYLOAD)
    flipped[1000] ^= 0x04
    (tmp_path / "file.bin").write_bytes(bytes(flipped))
    with pytest.raises(DataError) as error:
        fetch(resource("http://unused/"), tmp_path, download=True)
    message = str(error.value)
    assert md5(PAYLOAD) in message and md5(bytes(flipped)) in message
    assert str(tmp_path / "file.bin") in message
    assert (tmp_path / "file.bin").read_bytes() == bytes(flipped)
    fault_table(
        "archive on disk with one bit flipped (same size)",
        1,
        "DataError names the path, expected and actual MD5 and the fix; the file is kept",
    )


def test_missing_file_without_download(tmp_path: Path, fault_table) -> None:
    with pytest.raises(DataError) as error:
        fetch(resource("http://unused/"), tmp_path / "mnist", download=False)
    message = str(error.value)
    assert str(tmp_path / "mnist" / "file.bin") in message
    assert "NEURALAB_DATA" in message and "mnist/file.bin" in message and "download" in message
    fault_table(
        "archive missing, downloads off",
        1,
        "DataError names the path, NEURALAB_DATA and how to download",
    )


# ------------------------------------------------------------------------- safe extraction


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def test_extracts_into_place(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar.gz",
        [
            entry("top", kind=tarfile.DIRTYPE),
            entry("top/a.txt", b"hello"),
            entry("top/link", kind=tarfile.SYMTYPE, link="a.txt"),
            entry("top/hard", kind=tarfile.LNKTYPE, link="top/a.txt"),
        ],
    )
    dest = tmp_path / "dest"
    assert extract_tar(archive, dest) == dest
    assert (dest / "top" / "a.txt").read_bytes() == b"hello"
    assert (dest / "top" / "link").read_bytes() == b"hello"
    assert (dest / "top" / "hard").read_bytes() == b"hello"
    assert leftovers(tmp_path) == ["a.tar.gz", "dest"]  # no temp directory left


UNSAFE = {
    "parent traversal": [entry("../evil.txt", b"x")],
    "nested traversal": [entry("top/../../evil.txt", b"x")],
    "absolute path": [entry("/tmp/neuralab-evil.txt", b"x")],
    "symlink escaping": [entry("top/esc", kind=tarfile.SYMTYPE, link="../../outside")],
    "absolute symlink": [entry("top/esc", kind=tarfile.SYMTYPE, link="/etc/passwd")],
    "hardlink escaping": [entry("top/hard", kind=tarfile.LNKTYPE, link="../outside")],
    "path through a link": [
        entry("top/l", kind=tarfile.SYMTYPE, link="."),
        entry("top/l/evil.txt", b"x"),
    ],
    "device file": [entry("top/null", kind=tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_member_is_refused(tmp_path: Path, case: str, fault_table) -> None:
    # A good file first, so a refusal after partial extraction would show up as leftovers.
    members = [entry("top", kind=tarfile.DIRTYPE), entry("top/good.txt", b"ok"), *UNSAFE[case]]
    archive = make_tar(tmp_path / "a.tar.gz", members)
    with pytest.raises(DataError, match="refusing to extract"):
        extract_tar(archive, tmp_path / "dest")
    assert leftovers(tmp_path) == ["a.tar.gz"]
    fault_table(
        "tar member escaping the target (traversal, absolute, links, device)",
        1,
        "refused before anything is extracted; no leftovers",
    )


def test_decompression_bomb_is_refused(tmp_path: Path, fault_table) -> None:
    # 64 KiB of zeros compresses to ~100 bytes: a miniature bomb against a 10 KiB limit.
    archive = make_tar(tmp_path / "bomb.tar.gz", [entry("top/zeros.bin", bytes(64 << 10))])
    assert archive.stat().st_size < 1024
    with pytest.raises(DataError, match="decompression bombs"):
        extract_tar(archive, tmp_path / "dest", max_bytes=10 << 10)
    assert leftovers(tmp_path) == ["bomb.tar.gz"]
    fault_table("tar decompression bomb", 1, "refused at the byte limit; no leftovers")


def test_existing_entry_is_not_overwritten(tmp_path: Path, fault_table) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [entry("top/a.txt", b"new")])
    (tmp_path / "dest" / "top").mkdir(parents=True)
    (tmp_path / "dest" / "top" / "a.txt").write_bytes(b"mine")
    with pytest.raises(DataError, match="already exist"):
        extract_tar(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "top" / "a.txt").read_bytes() == b"mine"
    assert leftovers(tmp_path) == ["a.tar.gz", "dest"]
    fault_table(
        "extraction over the user's existing files", 1, "refused; the user's file unchanged"
    )


def test_corrupt_archive_is_a_data_error(tmp_path: Path, fault_table) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b this is not gzip")
    with pytest.raises(DataError, match="broken.tar.gz"):
        extract_tar(archive, tmp_path / "dest")
    assert leftovers(tmp_path) == ["broken.tar.gz"]
    fault_table("archive that is not gzip/tar", 1, "DataError naming the archive; no leftovers")
