"""Files and caches: the ground floor every other module that writes to disk stands on.

* :func:`cache_dir` — where the book keeps what it trains or renders once (``$AVPET_CACHE_DIR``,
  default ``~/.cache/avpet``): the pretrained micro-ViT and micro text encoder, synthetic splits.
* :func:`ensure_writable` — fail early, with the variable to set, before an hour of work is lost.
* :func:`atomic_write_bytes` — readers see the old file or the whole new one, never a torn one.
* :func:`config_hash` (on :func:`short_hash`) — the short hash of a configuration that names its
  cache files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

CACHE_ENV_VAR = "AVPET_CACHE_DIR"


class CacheError(OSError):
    """The cache directory cannot be created or written."""


def cache_dir() -> Path:
    """The cache directory: ``$AVPET_CACHE_DIR`` if set, else ``~/.cache/avpet``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "avpet")


def ensure_writable(directory: Path) -> Path:
    """Create ``directory`` if needed and check that a file can be written there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CacheError(
            f"{directory}: cache directory is not writable ({err.strerror or err}); "
            f"set {CACHE_ENV_VAR} to a writable directory"
        ) from err
    return directory


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a cache is meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type's name), for errors that name a file."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:limit]


def short_hash(text: str, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def config_hash(fields, length: int = 12) -> str:
    """A short hash of a configuration: a dataclass (its ``asdict``) or a dict, written as JSON with
    sorted keys (values JSON cannot hold written with ``str``), then :func:`short_hash`.

    Equal configurations give equal hashes in every process (no Python ``hash``); any changed field
    gives another, so a cache file named by it is never read for a configuration it was not made with.
    """
    if dataclasses.is_dataclass(fields) and not isinstance(fields, type):
        fields = dataclasses.asdict(fields)
    return short_hash(json.dumps(fields, sort_keys=True, default=str), length)
