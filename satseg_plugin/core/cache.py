"""SatSeg's download cache: where fetched files (pretrained encoder weights) live, and the one downloader.

The folder is ``$SATSEG_WEIGHTS_DIR`` when set, else ``<QGIS profile>/python/satseg_weights`` when the caller
hands in the profile folder (the Processing layer does; this module never imports QGIS), else
``~/.cache/satseg/weights``. A file already in the folder is used without any network access.

The download is written in chunks to a staged temporary file next to its final name
(:class:`~satseg_plugin.core.staging.StagedFile`, in a transaction of its own: the cache is not an output of the
run that fills it), reports progress and honours cancel through :class:`~satseg_plugin.core.progress.Feedback`,
and is checked against a SHA-256 (or a prefix of one) when the source publishes it. ``torch.hub`` and
``huggingface_hub`` download too, but into their own caches, with a console progress bar and no way to cancel,
so SatSeg streams the file itself.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import urllib.request
from typing import Optional

from .errors import CanceledError, InputError
from .progress import Feedback, NullFeedback, check_canceled
from .staging import StagedFile, Transaction

__all__ = ["WEIGHTS_DIR_ENV", "OFFLINE_ENV", "offline", "DownloadError", "weights_dir", "file_sha256", "download", "reachable", "urlopen"]

#: Environment variable that overrides the weights folder.
WEIGHTS_DIR_ENV = "SATSEG_WEIGHTS_DIR"
#: Environment variable that forbids every network request (air-gapped machines; the test suite sets it).
OFFLINE_ENV = "SATSEG_OFFLINE"
#: Bytes read per chunk: progress and cancel are checked once per chunk.
CHUNK_BYTES = 1 << 20

#: The opener every request goes through (tests replace it to serve a local file or to be offline).
urlopen = urllib.request.urlopen


class DownloadError(OSError):
    """A download failed (no network, HTTP error, or a hash that does not match); the message says which."""


def offline() -> bool:
    """Whether ``$SATSEG_OFFLINE`` forbids network requests (set, and not ``0``)."""
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def weights_dir(profile_dir: Optional[str] = None) -> str:
    """The folder pretrained weights are cached in (not created here).

    Args:
        profile_dir: the QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``) when running inside QGIS.

    Returns:
        ``$SATSEG_WEIGHTS_DIR``, else ``<profile_dir>/python/satseg_weights``, else ``~/.cache/satseg/weights``.
    """
    override = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if override:
        return os.path.abspath(os.path.expanduser(override))
    if profile_dir:
        return os.path.join(os.path.abspath(profile_dir), "python", "satseg_weights")
    return os.path.join(os.path.expanduser("~"), ".cache", "satseg", "weights")


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(functools.partial(handle.read, CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, path: str, feedback: Optional[Feedback] = None, sha256: Optional[str] = None,
             timeout: float = 30.0) -> str:
    """Download ``url`` to ``path`` through a staged temporary file; return ``path``.

    Args:
        url: what to fetch.
        path: the final file; its folder is created. Written only when the whole file arrived and its hash fits.
        feedback: progress in percent (when the server sends a length), cancel, and a log line.
        sha256: the expected SHA-256 in hex, or a prefix of it (torch hub file names carry 8 to 10 digits).
        timeout: seconds to wait for the server before giving up.

    Raises:
        DownloadError: no connection, an HTTP error, or a hash mismatch (nothing is left behind).
        CanceledError: the user canceled (the temporary file is removed).
    """
    feedback = feedback or NullFeedback()
    if offline():
        raise DownloadError(f"cannot download {url}: {OFFLINE_ENV} is set (no network requests)")
    feedback.info(f"Downloading {url} to {path}")
    # a transaction of its own: a run that fails later keeps the cached file
    with Transaction() as own:
        staged = StagedFile(path, transaction=own)
        with staged as tmp:
            digest = hashlib.sha256()
            try:
                with urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                    total = int(response.headers.get("Content-Length") or 0)
                    # Hugging Face sends the SHA-256 of a large (LFS) file as its "linked" ETag
                    linked = str(response.headers.get("X-Linked-Etag") or "").strip('"W/ ')
                    if not sha256 and re.fullmatch(r"[0-9a-f]{64}", linked):
                        sha256 = linked
                    done = 0
                    for chunk in iter(functools.partial(response.read, CHUNK_BYTES), b""):
                        check_canceled(feedback)
                        handle.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if total:
                            feedback.set_progress(min(100.0, 100.0 * done / total))
            except (CanceledError, InputError):
                raise
            except OSError as exc:  # URLError, HTTPError, socket timeouts are OSErrors
                raise DownloadError(f"cannot download {url}: {exc}") from exc
            if sha256 and not digest.hexdigest().startswith(sha256.lower()):
                raise DownloadError(f"the file downloaded from {url} has SHA-256 {digest.hexdigest()}, not "
                                    f"{sha256}: it is damaged or was replaced; try again later.")
            staged.commit()
        own.commit()
    return path


@functools.lru_cache(maxsize=32)
def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url`` answers a HEAD request within ``timeout`` seconds (asked once per process and URL);
    False without asking when :func:`offline`."""
    if offline():
        return False
    try:
        with urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
