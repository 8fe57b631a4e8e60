"""Files and caches: the ground floor every other module that writes to disk stands on.

* :func:`cache_dir` — where the book keeps what it trains or renders once (``$AVPET_CACHE_DIR``,
  default ``~/.cache/avpet``): the pretrained micro-ViT, synthetic splits.
* :func:`ensure_writable` — fail early, with the variable to set, before an hour of work is lost.
* :func:`atomic_write_bytes` — readers see the old file or the whole new one, never a torn one.
"""

from __future__ import annotations

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
