"""Fetch the benchmark text files, verify them against pinned checksums, install atomically.

Only the text is fetched: the photos are distributed separately by the dataset authors.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from smner.errors import SmnerError
from smner.fileio import atomic_write_bytes

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/jefferyYu/UMT/master/data"

#: SHA-256 of every file of the public release (jefferyYu/UMT, folder data/).
CHECKSUMS: dict[str, dict[str, str]] = {
    "twitter2015": {
        "train.txt": "a6246e37aa1c8acd738747fa8257e01775f2a1cc0d4f36f82f9d41d6246ad6fa",
        "valid.txt": "9dcc7f9df7331de3c9cdf67a3450e041c41c6254b5e43925c576e2dfaaabe2ad",
        "test.txt": "edb2665b89bfe58bca06a2c10b9b31cbfa95456135b6a4cbf55c872e48d9b8f9",
    },
    "twitter2017": {
        "train.txt": "801e149e8635b19d66b4ec1212c329be340ada501b35c5fa55455fb6f53633be",
        "valid.txt": "41b5db90cb32059c14c2c3ccd50845fb77f1e3d3e4f7d0c210a61bc507d8a73e",
        "test.txt": "a7d9e172ae85bd3e35276eb2b01ce223321bdc92a47b234e24305d72e7a05243",
    },
}

IMAGE_INSTRUCTIONS = (
    "Images are not downloaded: request the {name} photos from the dataset authors "
    "(see the README of jefferyYu/UMT) and unpack them so that each post's photo is "
    "{dest}/images/<IMGID>.jpg; then set data.image_dir to {dest}/images."
)


@dataclass(frozen=True, slots=True)
class DownloadResult:
    dataset: str
    files: list[Path]
    instructions: str


class DownloadError(SmnerError):
    """A file could not be fetched or did not match its checksum; nothing was written."""


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot reach the host ({reason})") from None


def download_benchmark(
    dataset: str, dest: str | Path, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0
) -> DownloadResult:
    """Download all splits of ``dataset`` into ``dest``.

    Every file is fetched and verified before any is written, so a failure (unreachable host,
    corrupt file) leaves ``dest`` exactly as it was.
    """
    if dataset not in CHECKSUMS:
        raise DownloadError(f"unknown dataset {dataset!r}; expected one of {sorted(CHECKSUMS)}")
    dest_path = Path(dest)
    fetched: dict[str, bytes] = {}
    for name, expected in CHECKSUMS[dataset].items():
        url = f"{base_url.rstrip('/')}/{dataset}/{name}"
        data = _fetch(url, timeout)
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise DownloadError(
                f"{url}: SHA-256 {digest[:16]}... does not match the expected "
                f"{expected[:16]}...; the file was refused and nothing was written"
            )
        fetched[name] = data
    written = []
    for name, data in fetched.items():
        target = dest_path / name
        atomic_write_bytes(target, data)
        written.append(target)
    return DownloadResult(dataset, written, IMAGE_INSTRUCTIONS.format(name=dataset, dest=dest_path))
