"""Every file the project reads or writes, local or in a bucket (``gs://``), through one module.

Paths are strings; ``gs://`` (and any other ``scheme://``) paths go through etils ``epath``,
the library TFDS and Orbax use for the same paths, and its ``fsspec`` backend (for Cloud
Storage: ``gcsfs``, which honours ``STORAGE_EMULATOR_HOST``); whole objects are written with
one request (``pipe_file``). Local paths stay plain ``os`` calls, absolute.

Atomic writes: locally a temporary file in the same folder renamed over the target; in a bucket
the content is uploaded as one object only once it is complete (an object is never visible
half-written), so in both cases a reader sees the old content or the new, never a part.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import tempfile

from etils import epath
import fsspec


def is_remote(path) -> bool:
    """Whether ``path`` is a URL (``gs://bucket/...``) rather than a local path."""
    return "://" in str(path)


def absolute(path) -> str:
    """A local path made absolute (``~`` expanded); a URL unchanged but for a trailing '/'."""
    path = str(path)
    if is_remote(path):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(root, *parts) -> str:
    root = str(root)
    return posixpath.join(root, *map(str, parts)) if is_remote(root) else os.path.join(root, *map(str, parts))


def dirname(path) -> str:
    path = str(path)
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def basename(path) -> str:
    path = str(path).rstrip("/")
    return posixpath.basename(path) if is_remote(path) else os.path.basename(path)


def epath_of(path) -> epath.Path:
    """The ``epath.Path`` of ``path`` (what Orbax and TFDS take)."""
    return epath.Path(absolute(path))


def exists(path) -> bool:
    return epath_of(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path) -> bool:
    return epath_of(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path) -> bool:
    return epath_of(path).is_file() if is_remote(path) else os.path.isfile(path)


def listdir(path) -> list[str]:
    """Names in folder ``path`` (FileNotFoundError if it is not one)."""
    if not is_remote(path):
        return os.listdir(path)
    folder = epath_of(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    return [child.name for child in folder.iterdir()]


def makedirs(path) -> None:
    if is_remote(path):
        epath_of(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def rmtree(path) -> None:
    """Deletes folder ``path`` and everything in it (nothing if it is gone)."""
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            epath_of(path).rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove(path) -> None:
    """Deletes file ``path`` (FileNotFoundError if it is gone)."""
    if is_remote(path):
        epath_of(path).unlink()
    else:
        os.unlink(path)


def rename(source, target) -> None:
    """Moves file or folder ``source`` to ``target`` (in a bucket: copied, then deleted)."""
    if is_remote(source):
        epath_of(source).rename(epath_of(target))
    else:
        os.rename(source, target)


MIRROR_ROOT = os.environ.get("FACEAGING_MIRROR_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "faceaging", "mirror")


def local_mirror(url: str, root: str = MIRROR_ROOT) -> str:
    """The local folder that mirrors ``url``: ``ROOT/gs/BUCKET/PATH``, ROOT being
    ``$FACEAGING_MIRROR_DIR`` or ``~/.cache/faceaging/mirror``."""
    return os.path.join(root, *absolute(url).replace("://", "/").split("/"))


def _files_under(folder) -> dict[str, int]:
    """{relative path: size} of every file under ``folder`` ({} if it does not exist)."""
    if not is_remote(folder):
        return {os.path.relpath(os.path.join(d, n), folder): os.path.getsize(os.path.join(d, n))
                for d, _, names in os.walk(folder) for n in names}
    fs, root = fsspec.core.url_to_fs(absolute(folder))
    found = fs.find(root, detail=True)  # one listing request per 1,000 objects
    return {name[len(root):].lstrip("/"): int(info["size"]) for name, info in found.items()
            if info.get("type") != "directory"}


def copy_missing(source, target, last: tuple[str, ...] = ()) -> list[str]:
    """Copies the files under folder ``source`` that ``target`` lacks (or holds with another
    size), each atomically; files named in ``last`` go after all others (e.g. the one whose
    presence says the folder is complete). Returns the relative paths copied."""
    have = _files_under(target)
    todo = sorted((name for name, size in _files_under(source).items() if have.get(name) != size),
                  key=lambda name: (basename(name) in last, name))
    for name in todo:
        write_bytes(join(target, *name.split("/")), read_bytes(join(source, *name.split("/"))))
    return todo


def read_bytes(path) -> bytes:
    if is_remote(path):
        return epath_of(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    return read_bytes(path).decode("utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yields a file object whose content replaces ``path`` (its folder created if missing) only
    when the block ends without an error; otherwise ``path`` keeps its old content (if any)."""
    if is_remote(path):
        buffer = io.BytesIO() if "b" in mode else io.StringIO(newline="")
        yield buffer
        data = buffer.getvalue()
        fs, object_path = fsspec.core.url_to_fs(absolute(path))
        fs.pipe_file(object_path, data if isinstance(data, bytes) else data.encode("utf-8"))
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(data)
