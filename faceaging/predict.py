"""Batch aging: many images -> every requested age, from a checkpoint's EMA generator.

Inputs are a file, a folder (recursive), a glob, or a text file listing paths. Targets are age
groups or ages mapped through the checkpoint's schedule. Outputs mirror input names under
``output_dir``: one PNG per target, a labelled grid, and optionally an animated GIF that
interpolates the age code between neighbouring groups. Bad inputs never stop the batch: each is
reported with its reason and the rest are processed. Existing outputs are never overwritten
unless ``overwrite``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob as glob_lib
import os
import threading

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from faceaging import align, files, grids, image_io, run as run_lib, schedules
from faceaging import workdir as workdir_lib

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
GIF_FRAMES_PER_GROUP = 6
GIF_FRAME_MS = 90
EXIT_SOME_FAILED = 2  # process exit code when any input was skipped or failed


class PredictError(ValueError):
    """Bad arguments or workdir: nothing can be processed."""


@dataclasses.dataclass
class Summary:
    done: int = 0
    skipped: int = 0  # outputs already existed
    failed: int = 0  # unreadable or unusable inputs

    @property
    def ok(self) -> bool:
        return self.skipped == 0 and self.failed == 0


def list_inputs(spec: str) -> list[tuple[str, str]]:
    """(path, name relative to the inputs' root) for a file, folder, glob or ``.txt`` list."""
    if os.path.isdir(spec):
        root = spec
        paths = [os.path.join(d, n) for d, _, names in os.walk(spec) for n in names
                 if n.lower().endswith(IMAGE_SUFFIXES)]
    elif os.path.isfile(spec) and spec.lower().endswith(".txt"):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        paths = [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines]
        root = None
    elif os.path.isfile(spec):
        paths, root = [spec], None
    else:
        paths, root = [p for p in glob_lib.glob(spec, recursive=True) if os.path.isfile(p)], None
    if not paths:
        raise PredictError(f"--input {spec!r} matches no images (a file, a folder, a glob, or a "
                           f".txt list of paths; image types {', '.join(IMAGE_SUFFIXES)})")
    paths = sorted(os.path.abspath(p) for p in paths)
    if root is None:
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [(p, os.path.relpath(p, os.path.abspath(root))) for p in paths]


def select_targets(schedule: schedules.AgeSchedule, target_groups: str = "all",
                   target_ages=None) -> list[int]:
    """Group indices to age to: from ages (mapped by the schedule) or from ``target_groups``."""
    if target_ages:
        groups = schedule.group_of([int(a) for a in target_ages])
        missing = [a for a, g in zip(target_ages, groups) if g < 0]
        if missing:
            raise PredictError(f"--target_ages {missing} fall in no group of schedule "
                               f"{schedule.name!r} ({', '.join(schedule.labels)})")
        return sorted(set(int(g) for g in groups))
    if target_groups in ("all", "", None):
        return list(range(schedule.num_groups))
    groups = [int(g) for g in str(target_groups).split(",")]
    bad = [g for g in groups if not 0 <= g < schedule.num_groups]
    if bad:
        raise PredictError(f"--target_groups {bad}: the schedule has groups 0..{schedule.num_groups - 1} "
                           f"({', '.join(schedule.labels)})")
    return sorted(set(groups))


def checkpoint_path(workdir: str | None, checkpoint: str | None) -> str:
    """What to load: ``--checkpoint=WORKDIR/checkpoints/STEP`` (checked) or ``--workdir``."""
    if checkpoint:
        try:
            workdir_lib.of_checkpoint(checkpoint)
        except ValueError:
            raise PredictError(f"--checkpoint {checkpoint!r}: expected WORKDIR/checkpoints/STEP") from None
        return checkpoint
    if not workdir:
        raise PredictError("pass --workdir (latest checkpoint) or --checkpoint=WORKDIR/checkpoints/STEP")
    return workdir


def interpolation_codes(num_groups: int, groups: list[int], frames_per_group: int) -> np.ndarray:
    """Age codes sweeping through ``groups`` in order, mixing neighbours linearly."""
    eye = np.eye(num_groups, dtype=np.float32)
    codes = [eye[groups[0]]]
    for a, b in zip(groups, groups[1:]):
        for t in np.linspace(0, 1, frames_per_group + 1)[1:]:
            codes.append((1 - t) * eye[a] + t * eye[b])
    return np.stack(codes)


def _outputs(output_dir: str, relative: str, labels, gif: bool, paste_back: bool) -> dict:
    stem = files.join(output_dir, os.path.splitext(relative)[0])
    out = {"targets": [f"{stem}_age_{label}.png" for label in labels], "grid": f"{stem}_grid.png",
           "gif": f"{stem}_aging.gif" if gif else None,
           "photos": [f"{stem}_photo_age_{label}.png" for label in labels] if paste_back else []}
    out["all"] = [*out["targets"], out["grid"], *out["photos"], *([out["gif"]] if gif else [])]
    return out


def save_gif(frames: np.ndarray, path: str) -> None:
    """A looping there-and-back GIF of (T, H, W, 3) uint8 frames, written atomically."""
    images = [Image.fromarray(f) for f in grids.enlarge(frames)]
    with files.atomic_write(path) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:] + images[-2:0:-1],
                       duration=GIF_FRAME_MS, loop=0)


class Loader:
    """Reads an input and returns (face crop, photo, photo->crop map) or an error string.

    Without an aligner the input is taken as an aligned crop; with one, the most confident face
    is detected and aligned by the eyes (detector calls are serialised; decoding is parallel).
    """

    def __init__(self, size: int, aligner: align.FaceAligner | None):
        self.size, self.aligner, self._lock = size, aligner, threading.Lock()

    def __call__(self, path: str):
        try:
            rgb = image_io.load_rgb(path)
            if self.aligner is None:
                return (image_io.square_resize(rgb, self.size), None, None), None
            with self._lock:
                face = self.aligner.align(rgb, self.size)
            return (face.crop, rgb, face.to_crop), None
        except (image_io.BadImageError, align.NoFaceError, OSError) as e:
            return None, str(e)


def predict(workdir: str | None, input_spec: str, output_dir: str, *, checkpoint: str | None = None,
            target_groups: str = "all", target_ages=None, gif: bool = False, overwrite: bool = False,
            batch_size: int | None = None, dtype: str | None = None, aligned: bool = False,
            paste_back: bool = False) -> Summary:
    """Ages every input to every target; returns the done/skipped/failed counts.

    Unless ``aligned``, faces are detected and aligned first (needs ``faceaging[align]``);
    ``paste_back`` also writes each aged face blended into the original photo.
    """
    if aligned and paste_back:
        raise PredictError("--paste_back needs detection: drop --aligned")
    aligner = None if aligned else align.FaceAligner()
    path = checkpoint_path(workdir, checkpoint)
    inputs = list_inputs(input_spec)
    try:
        trained = run_lib.load(path)
    except run_lib.NoCheckpointError as e:
        raise PredictError(str(e)) from None
    schedule, config = trained.schedule, trained.config
    groups = select_targets(schedule, target_groups, target_ages)
    labels = [schedule.labels[g] for g in groups]
    ager = trained.ager(config.mesh.num_devices, dtype)
    params = ager.place_params(trained.params("aging"))
    batch_size = -(-(batch_size or config.train.batch_size) // ager.mesh.size) * ager.mesh.size
    codes = np.eye(schedule.num_groups, dtype=np.float32)[groups]
    gif_codes = interpolation_codes(schedule.num_groups, groups, GIF_FRAMES_PER_GROUP) if gif else None

    load = Loader(config.image_size, aligner)
    summary, todo = Summary(), []
    for path, relative in inputs:
        out = _outputs(output_dir, relative, labels, gif, paste_back)
        if not overwrite and any(files.exists(p) for p in out["all"]):
            logging.warning("%s: skipped, outputs exist (pass --overwrite to replace them)", path)
            summary.skipped += 1
        else:
            todo.append((path, out))

    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool, \
            tqdm.tqdm(total=len(todo), unit="img", desc="aging") as bar:
        # Decoding of the next chunk overlaps with device work on the current one.
        pending = [pool.map(lambda p: load(p[0]), chunk) for chunk in chunks[:1]]
        for i, chunk in enumerate(chunks):
            loaded = list(pending.pop(0))
            if i + 1 < len(chunks):
                pending.append(pool.map(lambda p: load(p[0]), chunks[i + 1]))
            good = []
            for (path, out), (face, error) in zip(chunk, loaded):
                if error:
                    logging.error("%s: failed, %s", path, error)
                    summary.failed += 1
                else:
                    good.append((out, face))
            if good:
                images = np.stack([crop for _, (crop, _, _) in good])
                aged = ager(params, images, codes)
                frames = ager(params, images, gif_codes) if gif else None
                for j, (out, (crop, photo, to_crop)) in enumerate(good):
                    for k, target_path in enumerate(out["targets"]):
                        grids.save_png(aged[j, k], target_path)
                    for k, photo_path in enumerate(out["photos"]):
                        grids.save_png(align.paste_back(photo, aged[j, k], to_crop), photo_path)
                    grids.save_png(grids.aging_grid(crop[None], aged[j:j + 1], labels), out["grid"])
                    if gif:
                        save_gif(frames[j], out["gif"])
                    summary.done += 1
            bar.update(len(chunk))
    logging.info("Aging summary: %d done, %d skipped (outputs existed), %d failed; outputs in %s",
                 summary.done, summary.skipped, summary.failed, output_dir)
    return summary
