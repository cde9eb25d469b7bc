"""Weights files users supply: checksums and the verified ``.npz`` format converters write."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from faceaging import files

META_SOURCE, META_CONTENT = "__source_sha256__", "__content_sha256__"


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or not the file that was expected."""


def file_sha256(path: str) -> str:
    if files.is_remote(path):
        return hashlib.sha256(files.read_bytes(path)).hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_digest(arrays: dict) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays`` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def read_verified_npz(path: str, what: str) -> tuple[dict, str]:
    """(arrays, source SHA-256) of a converted weights file whose content digest checks out."""
    if not files.isfile(path):
        raise WeightsError(f"{what} weights not found at {path}")
    try:
        source = io.BytesIO(files.read_bytes(path)) if files.is_remote(path) else path
        with np.load(source, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # a truncated or non-npz file surfaces as many exception types
        raise WeightsError(f"{path}: not a readable .npz of {what} weights ({e})") from e
    source, stored = (str(arrays.pop(key, np.array(""))) for key in (META_SOURCE, META_CONTENT))
    if not stored or content_digest(arrays) != stored:
        raise WeightsError(f"{path}: content checksum mismatch; the file is corrupt or was not "
                           f"written by the converter (python -m faceaging.inception)")
    return arrays, source


def write_npz(path: str, arrays: dict, source_sha256: str) -> None:
    """Writes converted ``arrays`` with their source and content digests, atomically."""
    with files.atomic_write(path) as f:
        np.savez(f, **arrays, **{META_SOURCE: np.array(source_sha256),
                                 META_CONTENT: np.array(content_digest(arrays))})
