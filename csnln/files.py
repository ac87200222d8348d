"""Output files: atomic writes that honour the umask, stale temporaries, writable folders."""
import contextlib
import os
import pathlib
import signal
import tempfile
import threading

from .config import ConfigError

TEMP_SUFFIX = ".tmp"


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def ctrl_c_deferred():
    """Hold Ctrl-C for the block: one pressed meanwhile raises KeyboardInterrupt after it.

    A KeyboardInterrupt raised inside a writer that C++ calls back (torch.save's zip writer)
    aborts the process. Python handles signals in the main thread only; elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed and callable(previous):
            previous(signal.SIGINT, pressed[0])
        elif pressed and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def atomic_write(path, write, binary=True):
    """Call write(f) on a temporary file beside `path`, then rename it over `path`.

    A crash at any point leaves either the old file or the complete new one (and at worst a
    hidden `.<name>.*.tmp` that `remove_stale_temps` deletes); a Ctrl-C waits until the file
    is in place. The file gets the permissions the umask gives a new file, not mkstemp's 0600.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctrl_c_deferred():
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
