"""Output files: atomic writes that honour the umask, stale temporaries, writable folders."""
import os
import pathlib
import tempfile

from .config import ConfigError

TEMP_SUFFIX = ".tmp"


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def atomic_write(path, write, binary=True):
    """Call write(f) on a temporary file beside `path`, then rename it over `path`.

    A crash at any point leaves either the old file or the complete new one (and at worst a
    hidden `.<name>.*.tmp` that `remove_stale_temps` deletes). The file gets the permissions
    the umask gives a new file, not mkstemp's 0600.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(folder):
    """Delete the temporaries that a killed `atomic_write` left in `folder` -> their paths."""
    stale = sorted(pathlib.Path(folder).glob(f".*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def writable_dir(path, what):
    """Create folder `path` if needed and check that files can be written there (ConfigError if not)."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {what} {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable")
    return path
