"""The only code in neuralab that touches the network: checksummed, atomic downloads and safe
tar extraction.

A file is either already present (and verified, no network), or downloaded from its official URL
or a mirror into a hidden `.part` file beside its destination and renamed into place only once its
md5 matches. Nothing half-written or unverified is ever left under its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from neuralab.data.dataset import DataError

USER_AGENT = "neuralab/0.1 (+https://github.com/neuralab; dataset downloader)"
TIMEOUT_S = 60.0  # seconds without data before a mirror counts as failed
CHUNK_BYTES = 1 << 20  # 1 MiB read/hash chunks
MAX_EXTRACT_BYTES = 4 << 30  # 4 GiB: far above any dataset we ship, far below a disk-filling bomb

# (url, timeout in seconds) -> a readable binary response; injectable for tests.
Opener = Callable[[str, float], BinaryIO]


@dataclass(frozen=True)
class Resource:
    """One canonical file: its name, where to get it (official URL first, then mirrors), and
    the md5 (and byte size, when published) it must have."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    size: int | None = None


def open_url(url: str, timeout: float) -> BinaryIO:
    """Open `url` (http, https or file) with our User-Agent; raises urllib/OS errors."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (fixed URL table)


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    resource: Resource, dest_dir: str | Path, download: bool, opener: Opener = open_url
) -> Path:
    """Return `dest_dir/resource.filename`, verified, downloading it first if allowed.

    Args:
        resource: the file to get.
        dest_dir: the dataset's folder (e.g. `<data dir>/mnist`).
        download: allow the network when the file is missing.
        opener: how to open a URL (tests inject a local one).

    Raises:
        DataError: the file is missing and downloads are off, a present file fails its
            checksum, or every URL failed (each failure is listed).
    """
    dest_dir = Path(dest_dir)
    path = dest_dir / resource.filename
    if path.exists():
        verify(path, resource)
        return path
    if not download:
        raise DataError(missing_message(path))
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in resource.urls:
        print(
            f"neuralab: downloading {dest_dir.name}/{resource.filename} from {url}",
            file=sys.stderr,
            flush=True,
        )
        try:
            download_to(url, path, resource, opener)
            return path
        except (OSError, ValueError, http.client.HTTPException) as error:  # DataError too
            failures.append(f"  {url}: {describe(error)}")
    raise DataError(
        f"could not download {resource.filename} into {dest_dir}; every URL failed:\n"
        + "\n".join(failures)
        + "\nFix: check your connection or proxy, or download "
        f"the file yourself and place it at {path}."
    )


def missing_message(path: Path) -> str:
    """The error for a missing file when downloads are off."""
    dataset, filename = path.parent.name, path.name
    return (
        f"{dataset}: {filename} not found at {path} and downloads are off. Fix: set "
        f"NEURALAB_DATA (or --data-dir) to a folder that contains {dataset}/{filename}, "
        f"or allow downloads (download=True)."
    )


def describe(error: BaseException) -> str:
    """One readable line for a download failure."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    return str(error) or type(error).__name__


def verify(path: Path, resource: Resource) -> None:
    """Raise DataError naming file, expected/actual md5 and size, and the fix, on mismatch."""
    size = path.stat().st_size
    md5 = file_md5(path)
    if md5 == resource.md5 and (resource.size is None or size == resource.size):
        return
    expected_size = f"{resource.size:,} bytes" if resource.size is not None else "unpublished size"
    raise DataError(
        f"{path} is corrupted or truncated: expected md5 {resource.md5} ({expected_size}), "
        f"found md5 {md5} ({size:,} bytes). Fix: delete it so neuralab downloads it again, or "
        f"replace it with the canonical {resource.filename}."
    )


def download_to(url: str, path: Path, resource: Resource, opener: Opener) -> None:
    """Stream `url` into a hidden temp file beside `path`; rename it into place once verified."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, opener(url, TIMEOUT_S) as response:
            md5, size = copy_hashing(response, out, resource.size)
            out.flush()
            os.fsync(out.fileno())
        if md5 != resource.md5 or (resource.size is not None and size != resource.size):
            raise DataError(
                f"checksum mismatch: expected md5 {resource.md5}"
                f"{size_note(resource.size)}, got md5 {md5} ({size:,} bytes)"
            )
        os.chmod(temp, 0o644)  # mkstemp makes it private; a data file is for everyone to read
        os.replace(temp, path)
        fsync_dir(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def size_note(size: int | None) -> str:
    return f" ({size:,} bytes)" if size is not None else ""


def copy_hashing(source: BinaryIO, out: BinaryIO, limit: int | None) -> tuple[str, int]:
    """Copy `source` to `out`; return (md5, bytes). Stops past `limit` bytes (a wrong file)."""
    digest, total = hashlib.md5(), 0
    for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
        digest.update(chunk)
        out.write(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            break  # already wrong; do not let a bad mirror fill the disk
    return digest.hexdigest(), total


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def extract_tar(archive: str | Path, dest: str | Path, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Safely extract a (possibly compressed) tar archive so its entries appear under `dest`.

    Members are checked before they are written: absolute paths, `..` components, links leading
    outside `dest`, paths through links, device files and a total size above `max_bytes` are
    refused. Everything is extracted into a hidden temp directory beside `dest`, then each
    top-level entry is renamed into place, so a failure leaves no half-extracted tree.

    Args:
        archive: the .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz file.
        dest: the directory that receives the archive's top-level entries (created if needed).
        max_bytes: limit on the total uncompressed size (decompression-bomb guard).

    Returns:
        `dest`.

    Raises:
        DataError: naming the archive and the offending member, or an entry already present.
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        extract_checked(archive, temp, max_bytes)
        move_entries(temp, dest, archive)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return dest


def extract_checked(archive: Path, target: Path, max_bytes: int) -> None:
    """Extract `archive` into the empty directory `target`, checking each member first."""
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python ≥3.11.4
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, members=checked_members(tar, archive, max_bytes), **extra)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"cannot extract {archive}: {error}. Fix: delete the archive so neuralab "
            "downloads it again, or replace it with the canonical file."
        ) from error


def checked_members(
    tar: tarfile.TarFile, archive: Path, max_bytes: int
) -> Iterator[tarfile.TarInfo]:
    """Yield members one by one (lazily, so a bomb is stopped early) after checking each."""
    total, links = 0, set()
    for member in tar:
        check_member(member, archive, links)
        total += member.size
        if total > max_bytes:
            raise DataError(
                f"refusing to extract {archive}: it unpacks to more than "
                f"{max_bytes:,} bytes (at member {member.name!r}), the limit against "
                "decompression bombs. Fix: raise max_bytes if you trust this archive."
            )
        if member.issym() or member.islnk():
            links.add(PurePosixPath(member.name))
        yield member


def check_member(member: tarfile.TarInfo, archive: Path, links: set[PurePosixPath]) -> None:
    """Raise DataError for a member that could write outside the extraction directory."""
    name = PurePosixPath(member.name)

    def refuse(why: str) -> DataError:
        return DataError(
            f"refusing to extract {archive}: member {member.name!r} {why}. "
            "Fix: use the canonical archive; this one is unsafe."
        )

    windows = PureWindowsPath(member.name)
    if name.is_absolute() or windows.drive or windows.root:
        raise refuse("has an absolute path")
    if ".." in name.parts:
        raise refuse("contains '..'")
    if any(parent in links for parent in name.parents):
        raise refuse("goes through a link")
    if member.isdev():
        raise refuse("is a device file or FIFO")
    if member.issym() or member.islnk():
        check_link(member, name, refuse)
    elif not (member.isfile() or member.isdir()):
        raise refuse("is neither a file, a directory nor a link")


def check_link(
    member: tarfile.TarInfo, name: PurePosixPath, refuse: Callable[[str], DataError]
) -> None:
    """Links must stay inside the extraction directory (hard links: relative to its root)."""
    target = PurePosixPath(member.linkname)
    if target.is_absolute():
        raise refuse(f"links to the absolute path {member.linkname!r}")
    base = name.parent if member.issym() else PurePosixPath()
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            raise refuse(f"links outside the destination ({member.linkname!r})")


def move_entries(source: Path, dest: Path, archive: Path) -> None:
    """Rename each top-level entry of `source` into `dest`, refusing to overwrite anything."""
    entries = sorted(source.iterdir())
    clashes = [str(dest / entry.name) for entry in entries if (dest / entry.name).exists()]
    if clashes:
        raise DataError(
            f"cannot extract {archive}: {', '.join(clashes)} already exist(s). "
            "Fix: delete or move them away, then try again."
        )
    dest.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        os.replace(entry, dest / entry.name)
