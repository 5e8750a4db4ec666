"""Model folders from the Hugging Face Hub: ``org/name`` (optionally ``@revision``) -> a folder.

A local folder always wins; anything else that looks like a repo id is fetched (or found in
the local cache) with ``huggingface_hub.snapshot_download``, an optional dependency
(``pip install 'smner[hub]'``). Offline (``HF_HUB_OFFLINE=1``, or ``local_files_only``) only
the cache is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from smner.errors import SmnerError

#: ``org/name`` with the Hub's characters, optionally ``@revision``.
REPO_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$", re.ASCII)

INSTALL_HINT = "pip install 'smner[hub]'"


def parse_repo_id(name: str) -> tuple[str, str | None] | None:
    """``("org/name", revision or None)``, or None when ``name`` is not a repo id."""
    match = REPO_ID.match(name)
    if match is None or name.startswith((".", "/")) or ".." in match["repo"]:
        return None
    return match["repo"], match["revision"]


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def resolve_model_dir(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local folder of a saved model: ``name_or_path`` itself, or its Hub snapshot."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    parsed = parse_repo_id(str(name_or_path)) if not isinstance(name_or_path, Path) else None
    if parsed is None:
        raise SmnerError(
            f"{name_or_path}: no such model folder (expected a folder written by "
            "'smner train' or save_pretrained, or a Hugging Face Hub repo id org/name)"
        )
    repo_id, pinned = parsed
    if pinned and revision and pinned != revision:
        raise SmnerError(f"{name_or_path}: two revisions given ({pinned!r} and {revision!r})")
    revision = revision or pinned
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise SmnerError(
            f"{name_or_path} is not a local folder, and loading it from the Hugging Face Hub "
            f"needs huggingface_hub: {INSTALL_HINT}"
        ) from None
    offline = _offline(local_files_only)
    where = f"{repo_id}" + (f" (revision {revision})" if revision else "")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            local_files_only=offline,
            library_name="smner",
        )
    except errors.LocalEntryNotFoundError:
        if offline:
            raise SmnerError(
                f"{where} is not a local folder and not in the Hugging Face cache, and the Hub "
                "is not contacted offline (HF_HUB_OFFLINE=1 or local_files_only): download it "
                f"once online, e.g. `hf download {repo_id}`, or unset HF_HUB_OFFLINE"
            ) from None
        raise SmnerError(
            f"{where}: the Hugging Face Hub could not be reached and the model is not in the "
            "local cache: check the network (or a proxy, HF_ENDPOINT), or download it on a "
            f"machine online with `hf download {repo_id}` and copy the folder here"
        ) from None
    except errors.GatedRepoError:
        raise SmnerError(
            f"{where}: the repo is gated: accept its terms on the Hub and log in (`hf auth login`)"
        ) from None
    except errors.RepositoryNotFoundError:
        raise SmnerError(
            f"{where}: no such model folder here, and no such repo on the Hugging Face Hub "
            "(or it is private: log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except errors.RevisionNotFoundError:
        raise SmnerError(f"{repo_id}: the Hub repo has no revision {revision!r}") from None
    except (errors.HFValidationError, ValueError) as exc:
        raise SmnerError(f"{name_or_path}: not a valid Hub repo id ({exc})") from None
    except errors.HfHubHTTPError as exc:
        raise SmnerError(f"{where}: the Hugging Face Hub answered an error ({exc})") from None
    folder_path = Path(folder)
    if not (folder_path / "config.json").is_file():
        raise SmnerError(f"{where}: the Hub repo holds no smner model (no config.json)")
    return folder_path
