"""Differentiable augmentation of every image the discriminator reads (DiffAugment).

With few real images D can learn them by heart: it then passes fakes that only its memory
rejects, and its gradients tell G little about what makes a face real. DiffAugment (Zhao et al.,
2020) shows D each image, real or fake, through a random transform that gradients pass through,
in D's loss, in R1 and in G's adversarial term alike, so D cannot tell the two apart by the
transform and G still learns what D learns. ``config.train.d_augment`` names the transforms,
each with an optional size after a colon (a fraction of the image's side in (0, 1]):

- ``translation[:s]``: each image moved by a whole number of pixels, up to s of its side
  (default ``TRANSLATION``) in each direction, the uncovered border filled with mid-grey (0 in
  [-1, 1]);
- ``cutout[:s]``: a square of side s of the image's (default ``CUTOUT``), at a random centre
  (clipped at the border), filled with mid-grey.

Each image draws its own transform from the key; the step derives its keys from the run's seed
and the step number, so a resumed run draws what an uninterrupted one would.
"""

import jax
import jax.numpy as jnp

TRANSLATION = 0.125  # largest shift, as a fraction of the image side
CUTOUT = 0.5  # the square's side, as a fraction of the image side


def translate(images, key, fraction: float = TRANSLATION):
    """(N, H, W, C) images, each moved by its own (dy, dx) in [-s, s] pixels, s = round(fraction x
    side); the border the move uncovers is 0."""
    n, h, w, _ = images.shape
    sy, sx = round(h * fraction), round(w * fraction)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (n,), -sy, sy + 1)
    dx = jax.random.randint(kx, (n,), -sx, sx + 1)
    padded = jnp.pad(images, ((0, 0), (sy, sy), (sx, sx), (0, 0)))

    def window(image, y, x):  # output (i, j) reads input (i - dy, j - dx)
        return jax.lax.dynamic_slice(image, (sy - y, sx - x, 0), (h, w, image.shape[-1]))

    return jax.vmap(window)(padded, dy, dx)


def cut_out(images, key, fraction: float = CUTOUT):
    """(N, H, W, C) images, each with a square of side round(fraction x side) set to 0 around its
    own random centre (the part inside the image)."""
    n, h, w, _ = images.shape
    size_y, size_x = round(h * fraction), round(w * fraction)
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n, 1, 1), 0, h)
    cx = jax.random.randint(kx, (n, 1, 1), 0, w)
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = ((rows >= cy - size_y // 2) & (rows < cy - size_y // 2 + size_y)
              & (cols >= cx - size_x // 2) & (cols < cx - size_x // 2 + size_x))
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


# name -> (transform, its size when the policy names none)
TRANSFORMS = {"translation": (translate, TRANSLATION), "cutout": (cut_out, CUTOUT)}
Policy = tuple[tuple[str, float], ...]  # (transform, size) pairs, parse's result
EXPECTED = (f"a comma-separated subset of {', '.join(TRANSFORMS)}, each optionally with ':SIZE', "
            "a fraction of the image's side in (0, 1] ('' for none)")


def _size(text: str) -> float | None:
    try:
        size = float(text)
    except ValueError:
        return None
    return size if 0 < size <= 1 else None


def parse(policy: str) -> Policy:
    """``'translation,cutout:0.25'`` -> (('translation', TRANSLATION), ('cutout', 0.25)); '' ->
    (). Raises ValueError naming ``config.train.d_augment`` for an unknown name or a bad size."""
    parsed, bad = [], []
    for item in (p.strip() for p in policy.split(",")):
        if not item:
            continue
        name, colon, size_text = (part.strip() for part in item.partition(":"))
        known = TRANSFORMS.get(name)
        size = None if known is None else _size(size_text) if colon else known[1]
        if size is None:
            bad.append(item)
        else:
            parsed.append((name, size))
    if bad:
        raise ValueError(f"config.train.d_augment={policy!r}: cannot read {', '.join(bad)}; "
                         f"expected {EXPECTED}")
    return tuple(parsed)


def augment(images, key, policy: Policy):
    """``images`` through each (transform, size) of ``policy`` (``parse``'s result) in order,
    each with its own key."""
    for (name, size), k in zip(policy, jax.random.split(key, max(len(policy), 1))):
        images = TRANSFORMS[name][0](images, k, size)
    return images
