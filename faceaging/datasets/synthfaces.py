"""SynthFaces: procedurally rendered faces with ground-truth lifespans (numpy + Pillow only).

Each identity keeps its traits (skin tone tied to race, face shape, eyes, nose, mouth, hair,
gender cues, background) at every age; age changes proportions (child -> adult), greys and
recedes hair, adds wrinkles, eye bags, sagging and age spots. Images are written in UTKFace's
format, ``age_gender_race_STAMP.jpg.chip.jpg``, where STAMP is the same for every image of an
identity: UTKFace's hash split on that field keeps each identity inside one split. An index
(``index.csv``) gives each file's identity, so any image can be re-rendered at any other age.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import multiprocessing
import os
import shutil
import tempfile
from typing import NamedTuple

from absl import logging
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
import tensorflow_datasets as tfds

from faceaging import files
from faceaging.datasets import utkface

SIZE = 200
SCALE = 2  # drawn at 2x, then downsampled for anti-aliasing
AGES = (1, 100)
INDEX_NAME = "index.csv"
RENDERER_VERSION = "3"  # bump whenever render() changes its output; written beside the index
VERSION_NAME = "renderer_version.txt"
FOLDER_NAME = utkface.FOLDER_NAME

SKIN = np.array([(236, 200, 178), (112, 74, 54), (229, 194, 158), (172, 126, 92), (199, 158, 124)], float)
HAIR = np.array([(20, 18, 18), (62, 40, 26), (110, 72, 40), (205, 168, 100), (150, 62, 30)], float)
HAIR_BY_RACE = np.array([[.2, .3, .2, .2, .1], [.85, .15, 0, 0, 0], [.8, .2, 0, 0, 0],
                         [.7, .3, 0, 0, 0], [.4, .35, .15, .05, .05]])
# Iris colours far apart, so they stay legible at 32 px: brown, dark brown, blue, green, amber.
EYES = np.array([(120, 70, 30), (36, 24, 16), (60, 125, 210), (60, 160, 70), (200, 150, 40)], float)
EYES_BY_RACE = np.array([[.3, .1, .3, .15, .15], [.3, .7, 0, 0, 0], [.3, .7, 0, 0, 0],
                         [.4, .6, 0, 0, 0], [.4, .3, .1, .1, .1]])
GREY = np.array((228, 228, 226), float)
STUBBLE_ALPHA = 0.14  # opacity of a grown man's stubble (hair colour over the lower face)
LANDMARKS = ("crown", "eyes", "mouth", "chin")  # rows of landmarks()
SERIAL_RENDERS = 128  # render_jpegs renders fewer jobs than this in the calling process
EVAL_IDENTITY_BASE = 2 * 10**6  # --mode=eval's fresh identities (the trait classifier's: 10**6 on)
STAMP_BASE = 20170000000000000  # identity i's files carry STAMP_BASE + i as their datetime field


@dataclasses.dataclass(frozen=True)
class Identity:
    """Traits that stay fixed across a lifetime."""

    index: int
    gender: int  # 0 male, 1 female (UTKFace convention)
    race: int  # 0 white, 1 black, 2 asian, 3 indian, 4 other
    skin: tuple
    hair_colour: int
    hair_style: int  # 0 short, 1 long, 2 bob
    balding: bool
    eye_colour: int
    face_width: float  # adult width / height
    jaw: float
    eye_spacing: float
    eye_size: float
    nose: float
    mouth: float
    brow: float
    background: tuple
    clothes: tuple

    @property
    def stamp(self) -> str:
        """The UTKFace 'datetime' field shared by all this identity's images."""
        return f"{STAMP_BASE + self.index:017d}"


def identity_index(file_name) -> int:
    """The identity index encoded in a SynthFaces file name's STAMP field."""
    name = file_name.decode() if isinstance(file_name, bytes) else file_name
    return int(utkface.parse_name(name).split_key) - STAMP_BASE


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng([seed, index, 0])
    gender, race = int(rng.integers(2)), int(rng.integers(5))
    skin = np.clip(SKIN[race] + rng.normal(0, 8, 3), 0, 255)
    return Identity(
        index=index, gender=gender, race=race, skin=tuple(skin),
        hair_colour=int(rng.choice(5, p=HAIR_BY_RACE[race])),
        hair_style=int(rng.choice(3, p=[.15, .55, .3] if gender else [.8, .05, .15])),
        balding=bool(gender == 0 and rng.random() < 0.5),
        eye_colour=int(rng.choice(5, p=EYES_BY_RACE[race])),
        face_width=float(rng.uniform(0.70, 0.80) + (0.04 if gender == 0 else 0)),
        jaw=float(rng.uniform(0.55, 0.75) + (0.1 if gender == 0 else 0)),
        eye_spacing=float(rng.uniform(0.40, 0.48)), eye_size=float(rng.uniform(0.85, 1.15)),
        nose=float(rng.uniform(0.85, 1.2)), mouth=float(rng.uniform(0.85, 1.15)),
        brow=float(rng.uniform(0.8, 1.3) + (0.4 if gender == 0 else 0)),
        background=tuple(rng.uniform(120, 230, 3)), clothes=tuple(rng.uniform(30, 200, 3)))


def _ramp(age: float, start: float, end: float) -> float:
    """0 before ``start``, 1 after ``end``, smooth in between."""
    t = np.clip((age - start) / (end - start), 0.0, 1.0)
    return float(t * t * (3 - 2 * t))


def _rgba(colour, alpha: float = 1.0):
    return tuple(int(round(c)) for c in colour) + (int(round(255 * np.clip(alpha, 0, 1))),)


def _mix(a, b, t: float):
    return tuple(np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t)


def render(identity: Identity, age: int, seed: int = 0, pose_age: int | None = None) -> np.ndarray:
    """The identity at ``age`` as a (200, 200, 3) uint8 image; deterministic in its arguments.

    Pose and lighting are those of the identity's render at ``pose_age`` (default ``age``), so
    ``render(identity, a, pose_age=b)`` is the render at age ``b`` aged to ``a``, all else equal:
    the ground truth for aging that image.
    """
    rng = np.random.default_rng([seed, identity.index, age, 1])
    pose = _pose(identity, age, seed, pose_age)
    s = SIZE * SCALE
    layout = _layout(identity, age)
    growth, sag = layout.growth, layout.sag
    grey = _ramp(age, 40, 80)
    wrinkle = _ramp(age, 30, 85)
    late = _ramp(age, 50, 90)

    # An RGB canvas drawn in RGBA mode blends each stroke by its alpha (on an RGBA canvas,
    # ImageDraw replaces pixels, which made renderer 2's translucent strokes opaque).
    image = Image.new("RGB", (s, s), _rgba(identity.background)[:3])
    draw = ImageDraw.Draw(image, "RGBA")
    head_h, head_w, cx, top = layout.head_h, layout.head_w, layout.cx, layout.top
    mid_y = top + head_h * 0.5
    hair = hair_colour_at(identity, age)
    skin = identity.skin
    shade = _mix(skin, (60, 30, 20), 0.35)

    # Body, long hair behind the head, neck.
    draw.ellipse((cx - s * 0.42, top + head_h * 1.05, cx + s * 0.42, s * 1.5), fill=_rgba(identity.clothes))
    if identity.hair_style == 1:
        draw.rounded_rectangle((cx - head_w * 0.62, top + head_h * 0.1, cx + head_w * 0.62,
                                top + head_h * (1.0 + 0.25 * growth)), radius=s * 0.08, fill=_rgba(hair))
    draw.rectangle((cx - head_w * 0.22, mid_y, cx + head_w * 0.22, top + head_h * 1.15), fill=_rgba(shade))

    # Face: a rounded skull plus a jaw that narrows to the chin (wider and lower when sagging).
    jaw_w, chin_y = layout.jaw_w, layout.chin_y
    draw.ellipse((cx - head_w / 2, top, cx + head_w / 2, top + head_h * 0.85), fill=_rgba(skin))
    draw.polygon([(cx - head_w / 2, mid_y - head_h * 0.05), (cx + head_w / 2, mid_y - head_h * 0.05),
                  (cx + jaw_w, chin_y - head_h * 0.12), (cx + jaw_w * 0.45, chin_y),
                  (cx - jaw_w * 0.45, chin_y), (cx - jaw_w, chin_y - head_h * 0.12)], fill=_rgba(skin))
    for side in (-1, 1):  # ears
        ex = cx + side * head_w * 0.5
        draw.ellipse((ex - s * 0.03, mid_y - s * 0.03, ex + s * 0.03, mid_y + s * 0.07), fill=_rgba(skin))

    # Features: eyes sit low in a child's face (big forehead) and rise to mid-height in adults.
    eye_y = layout.eye_y
    eye_r = s * (0.046 - 0.014 * growth) * identity.eye_size
    eye_dx = head_w * identity.eye_spacing / 2
    for side in (-1, 1):
        ex = cx + side * eye_dx
        if late > 0:  # eye bags
            draw.arc((ex - eye_r * 1.2, eye_y - eye_r * 0.2, ex + eye_r * 1.2, eye_y + eye_r * 1.9),
                     20, 160, fill=_rgba(shade, 0.8 * late), width=max(1, int(3 * late)))
        draw.ellipse((ex - eye_r * 1.3, eye_y - eye_r * (0.75 - 0.1 * sag), ex + eye_r * 1.3,
                      eye_y + eye_r * 0.75), fill=_rgba((245, 245, 240)))
        draw.ellipse((ex - eye_r * 0.8, eye_y - eye_r * 0.75, ex + eye_r * 0.8, eye_y + eye_r * 0.75),
                     fill=_rgba(EYES[identity.eye_colour]))
        draw.ellipse((ex - eye_r * 0.22, eye_y - eye_r * 0.22, ex + eye_r * 0.22, eye_y + eye_r * 0.22),
                     fill=_rgba((10, 10, 10)))
        brow_y = eye_y - eye_r * 1.6
        draw.line((ex - eye_r * 1.4, brow_y + side * 0, ex + eye_r * 1.4, brow_y - eye_r * 0.2),
                  fill=_rgba(_mix(HAIR[identity.hair_colour], GREY, grey * 0.8)),
                  width=max(2, int(s * 0.008 * identity.brow * (0.6 + 0.4 * growth))))
        if wrinkle > 0:  # crow's feet
            for k in (-1, 0, 1):
                x0 = ex + side * eye_r * 1.45
                draw.line((x0, eye_y + k * eye_r * 0.3, x0 + side * eye_r * (0.7 + 0.5 * wrinkle),
                           eye_y + k * eye_r * 0.6), fill=_rgba(shade, 0.7 * wrinkle), width=2)
    nose_len = layout.nose_len
    nose_w = head_w * (0.07 + 0.04 * growth) * identity.nose
    draw.line((cx, eye_y, cx + nose_w * 0.3, eye_y + nose_len), fill=_rgba(shade, 0.6), width=3)
    draw.ellipse((cx - nose_w, eye_y + nose_len - nose_w * 0.4, cx + nose_w, eye_y + nose_len + nose_w * 0.5),
                 fill=_rgba(shade, 0.35))
    mouth_y = layout.mouth_y
    mouth_w = head_w * (0.14 + 0.06 * growth) * identity.mouth
    lips = _mix(skin, (170, 60, 70), 0.55 if identity.gender else 0.3)
    draw.chord((cx - mouth_w, mouth_y - mouth_w * 0.3, cx + mouth_w, mouth_y + mouth_w * 0.45),
               0, 180, fill=_rgba(lips))
    draw.line((cx - mouth_w, mouth_y + mouth_w * 0.07 * sag, cx + mouth_w, mouth_y + mouth_w * 0.07 * sag),
              fill=_rgba((90, 40, 40)), width=2)
    if identity.gender == 0 and age >= 18:  # stubble
        draw.chord(layout.stubble_box, 0, 180, fill=_rgba(hair, STUBBLE_ALPHA * _ramp(age, 16, 25)))
    if wrinkle > 0:  # forehead lines and nasolabial folds
        for k in range(1 + int(3 * wrinkle)):
            y = eye_y - eye_r * 2.4 - k * head_h * 0.035
            draw.arc((cx - head_w * 0.25, y - 8, cx + head_w * 0.25, y + 8), 200, 340,
                     fill=_rgba(shade, 0.75 * wrinkle), width=2)
        for side in (-1, 1):
            x0, y0 = cx + side * nose_w * 1.1, eye_y + nose_len
            draw.line((x0, y0, x0 + side * mouth_w * 0.55, mouth_y + mouth_w * 0.35), fill=_rgba(shade, 0.85 * wrinkle),
                      width=max(2, int(4 * wrinkle)))
    for _ in range(int(14 * _ramp(age, 58, 95))):  # age spots
        x = cx + rng.uniform(-0.35, 0.35) * head_w
        y = top + rng.uniform(0.15, 0.75) * head_h
        r = rng.uniform(2, 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba((120, 80, 50), 0.55))

    # Hair on top; balding men lose the front from their 30s.
    recede = _ramp(age, 30, 70) if identity.balding else 0.0
    hairline = top + head_h * (0.16 + 0.05 * growth + 0.16 * recede)
    cap = (cx - head_w * 0.55, top - head_h * 0.06, cx + head_w * 0.55, hairline * 2 - top + head_h * 0.06)
    draw.chord(cap, 180, 360, fill=_rgba(hair, 1.0 - 0.85 * recede))
    if identity.hair_style != 0:
        for side in (-1, 1):  # sides framing the face
            x0 = cx + side * head_w * 0.5
            draw.rectangle((min(x0, x0 + side * head_w * 0.1), top + head_h * 0.25,
                            max(x0, x0 + side * head_w * 0.1),
                            top + head_h * (0.55 if identity.hair_style == 2 else 0.9)), fill=_rgba(hair))

    # Mild nuisance: pose jitter, lighting gradient, colour noise.
    image = image.rotate(pose.angle, resample=Image.BILINEAR, translate=pose.shift,
                                        fillcolor=tuple(int(c) for c in identity.background))
    image = image.filter(ImageFilter.GaussianBlur(0.6)).resize((SIZE, SIZE), Image.LANCZOS)
    pixels = np.asarray(image, np.float32)
    light = 1 + pose.light * np.linspace(-1, 1, SIZE)[None, :, None]
    pixels = pixels * light * pose.gain + rng.normal(0, 3, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


class Layout(NamedTuple):
    """Where render() draws the head and features at an age, on its 2x canvas (pixels)."""

    growth: float  # 0 child .. 1 adult proportions
    sag: float
    cx: float
    top: float  # crown: the top of the skull
    head_h: float
    head_w: float
    jaw_w: float
    eye_y: float
    nose_len: float
    mouth_y: float
    chin_y: float

    @property
    def stubble_box(self) -> tuple:
        """The ellipse whose lower half holds the stubble, as ImageDraw.chord takes it."""
        return (self.cx - self.jaw_w * 0.85, self.mouth_y - self.nose_len * 0.5,
                self.cx + self.jaw_w * 0.85, self.chin_y)


def _layout(identity: Identity, age: int) -> Layout:
    s = SIZE * SCALE
    growth, sag = _ramp(age, 1, 18), _ramp(age, 55, 95)
    head_h = s * (0.50 + 0.10 * growth + 0.02 * sag)
    head_w = head_h * (0.90 - (0.90 - identity.face_width) * growth)
    top = s * (0.20 - 0.04 * growth)
    jaw_w = head_w * (0.5 * (0.8 - 0.2 * growth + identity.jaw * growth) + 0.08 * sag)
    chin_y = top + head_h * (1.0 + 0.03 * sag)
    eye_y = top + head_h * (0.56 - 0.10 * growth)
    nose_len = head_h * (0.09 + 0.07 * growth) * identity.nose
    mouth_y = eye_y + nose_len + (chin_y - eye_y - nose_len) * (0.38 + 0.06 * sag)
    return Layout(growth, sag, s / 2, top, head_h, head_w, jaw_w, eye_y, nose_len, mouth_y, chin_y)


class Pose(NamedTuple):
    """The nuisance of one render: rotation (degrees), shift (2x-canvas pixels), light."""

    angle: float
    shift: tuple
    light: float  # left-right lighting gradient
    gain: float


def _pose(identity: Identity, age: int, seed: int, pose_age: int | None) -> Pose:
    nuisance = np.random.default_rng([seed, identity.index, age if pose_age is None else pose_age, 3])
    angle, shift = nuisance.uniform(-4, 4), tuple(nuisance.uniform(-6, 6, 2))
    return Pose(angle, shift, nuisance.uniform(-0.12, 0.12), nuisance.uniform(0.92, 1.08))


def hair_colour_at(identity: Identity, age: int) -> tuple:
    """The RGB colour of the identity's hair (and stubble) at ``age``: greying from 40 to 80."""
    return _mix(HAIR[identity.hair_colour], GREY, _ramp(age, 40, 80))


def _posed(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Canvas points (..., 2) as x, y after render()'s rotation and shift, as fractions of the side."""
    c = SIZE * SCALE / 2
    t = np.deg2rad(pose.angle)
    x, y = points[..., 0] - c, points[..., 1] - c
    posed = np.stack([c + x * np.cos(t) + y * np.sin(t) + pose.shift[0],
                      c - x * np.sin(t) + y * np.cos(t) + pose.shift[1]], axis=-1)
    return posed / (SIZE * SCALE)


def landmarks(identity: Identity, age: int, seed: int = 0, pose_age: int | None = None) -> np.ndarray:
    """(LANDMARKS, 2) x, y of the crown, eye line, mouth and chin centres in ``render``'s image
    (same arguments), as fractions of its side: the geometry that aging changes most."""
    layout = _layout(identity, age)
    points = np.array([(layout.cx, y) for y in (layout.top, layout.eye_y, layout.mouth_y,
                                                layout.chin_y)])
    return _posed(points, _pose(identity, age, seed, pose_age))


def stubble_mask(identity: Identity, age: int, size: int, seed: int = 0,
                 pose_age: int | None = None) -> np.ndarray:
    """(size, size) bool: where ``render`` (same arguments) draws a man's stubble at ``age``,
    whether or not this identity has any (women and children are measured in the same place)."""
    s = SIZE * SCALE
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).chord(_layout(identity, age).stubble_box, 0, 180, fill=255)
    pose = _pose(identity, age, seed, pose_age)
    mask = mask.rotate(pose.angle, resample=Image.BILINEAR, translate=pose.shift)
    return np.asarray(mask.resize((size, size), Image.BILINEAR)) >= 128


def sample_ages(seed: int, identity: int, count: int) -> list[int]:
    """``count`` distinct ages covering 1-100 evenly (one from each of ``count`` age bins)."""
    rng = np.random.default_rng([seed, identity, 2])
    edges = np.linspace(AGES[0], AGES[1] + 1, count + 1)
    return sorted({int(rng.integers(int(lo), max(int(lo) + 1, int(hi)))) for lo, hi in zip(edges, edges[1:])})


def file_name(identity: Identity, age: int) -> str:
    return f"{age}_{identity.gender}_{identity.race}_{identity.stamp}{utkface.NAME_SUFFIX}"


def generate(folder: str, num_identities: int, ages_per_identity: int, seed: int = 0,
             quality: int = 92, processes: int | None = None) -> int:
    """Writes the dataset (``folder/UTKFace/*.jpg.chip.jpg`` + ``folder/index.csv``); returns #images.

    Renders in ``processes`` worker processes (default: one per core) into a private temporary
    folder renamed into place, so a crash never leaves half a dataset, and processes preparing
    the same folder at once all end with the one complete copy.
    """
    final = os.path.join(folder, FOLDER_NAME)
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; refusing to overwrite a dataset")
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=FOLDER_NAME + ".partial-", dir=folder)
    try:
        rows = _render_into(tmp, seed, num_identities, ages_per_identity, quality, processes)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        files.write_text(os.path.join(folder, INDEX_NAME), buffer.getvalue())
        files.write_text(os.path.join(folder, VERSION_NAME), RENDERER_VERSION)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            logging.info("SynthFaces: another process finished %s first; using it", final)
        return len(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _render_into(folder, seed, num_identities, ages_per_identity, quality, processes) -> list[dict]:
    rows = []
    jobs = [(seed, index, ages_per_identity, quality) for index in range(num_identities)]
    with multiprocessing.get_context("spawn").Pool(processes or os.cpu_count()) as pool:
        for done, rendered in enumerate(pool.imap(_render_identity, jobs, chunksize=8), 1):
            for name, data, row in rendered:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(data)
                rows.append(row)
            if done % 100 == 0 or done == num_identities:
                logging.info("SynthFaces: rendered %d/%d identities", done, num_identities)
    return rows


def rendered_version(folder: str) -> str | None:
    """The renderer version that wrote the dataset in ``folder`` (None if it predates versions)."""
    path = os.path.join(folder, VERSION_NAME)
    return open(path).read().strip() if os.path.exists(path) else None


def read_index(folder: str) -> list[dict]:
    with open(os.path.join(folder, INDEX_NAME)) as f:
        return [{**row, **{k: int(row[k]) for k in ("identity", "age", "gender", "race")}}
                for row in csv.DictReader(f)]


class SynthFaces(utkface.UTKFace):
    """SynthFaces read by the unchanged UTKFace builder logic, under its own dataset name."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Renderer 2: pose and lighting drawn apart from age features; "
                              "larger irises in distinct colours.",
                     "1.2.0": "Files that do not decode as images are left out (and listed).",
                     "1.3.0": "Renderer 3: translucent strokes blend (stubble, thinning hair, "
                              "wrinkles, eye bags, age spots) instead of painting opaque."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Generated on first use by faceaging (configs/synthfaces.py)."


def render_jpeg(identity: Identity, age: int, seed: int = 0, quality: int = 92,
                pose_age: int | None = None) -> bytes:
    """The render as JPEG bytes, as the dataset stores it."""
    buffer = io.BytesIO()
    Image.fromarray(render(identity, age, seed, pose_age)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _render_identity(args) -> list[tuple[str, bytes, dict]]:
    seed, index, ages_per_identity, quality = args
    identity = make_identity(seed, index)
    out = []
    for age in sample_ages(seed, index, ages_per_identity):
        name = file_name(identity, age)
        out.append((name, render_jpeg(identity, age, seed, quality), {
            "file_name": name, "identity": index, "age": age, "gender": identity.gender,
            "race": identity.race, "split": utkface.split_of(utkface.parse_name(name))}))
    return out


def _render_one(args) -> bytes:
    seed, index, age, pose_age = args
    return render_jpeg(make_identity(seed, index), age, seed, pose_age=pose_age)


def render_jpegs(seed: int, identities_and_ages, processes: int | None = None) -> list[bytes]:
    """JPEG renders of (identity index, age) or (identity index, age, pose age) tuples, rendered
    in parallel processes."""
    jobs = [(seed, int(job[0]), int(job[1]), None if len(job) < 3 else int(job[2]))
            for job in identities_and_ages]
    if len(jobs) < SERIAL_RENDERS:  # starting worker processes would take longer
        return [_render_one(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(processes or os.cpu_count()) as pool:
        return list(pool.imap(_render_one, jobs, chunksize=32))


def prepare(data_config) -> tfds.core.DatasetBuilder:
    """Renders SynthFaces into ``data_config.manual_dir`` on first use (``data_config.synthfaces``
    says how many identities and ages), then builds it like UTKFace into ``data_dir``."""
    manual_dir = data_config.manual_dir
    if not os.path.isdir(os.path.join(manual_dir, FOLDER_NAME)):
        s = data_config.synthfaces
        logging.info("Rendering SynthFaces (%d identities x %d ages) into %s", s.num_identities,
                     s.ages_per_identity, manual_dir)
        generate(manual_dir, s.num_identities, s.ages_per_identity, seed=s.seed)
    elif (found := rendered_version(manual_dir)) != RENDERER_VERSION:
        raise ValueError(
            f"{manual_dir} holds SynthFaces from renderer version "
            f"{found or '1'}, but this faceaging renders version "
            f"{RENDERER_VERSION}: move that folder away or set --config.data.manual_dir "
            "to a new folder, and it is rendered again (nothing is overwritten)")
    builder = SynthFaces(data_dir=data_config.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
