"""faceaging/augment.py: the transforms D reads images through, and where the step applies them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from faceaging import augment, config_checks, steps
from helpers import abstract_step_inputs

N, SIDE = 16, 16


def _images():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(0.1, 1.0, (N, SIDE, SIDE, 3)), jnp.float32)  # no zeros


def _shift_of(image, moved, s):
    """The (dy, dx) with |d| <= s that moves ``image`` onto ``moved`` (0 where uncovered)."""
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            expected = np.zeros_like(image)
            ys, xs = slice(max(dy, 0), SIDE + min(dy, 0)), slice(max(dx, 0), SIDE + min(dx, 0))
            expected[ys, xs] = image[max(-dy, 0):SIDE - max(dy, 0), max(-dx, 0):SIDE - max(dx, 0)]
            if np.array_equal(expected, moved):
                return dy, dx
    raise AssertionError("not a translation of the input by at most the allowed shift")


def test_translation_moves_each_image_by_its_own_whole_pixel_shift_and_passes_gradients():
    x = _images()
    key = jax.random.key(3)
    moved = np.asarray(augment.translate(x, key))
    s = round(SIDE * augment.TRANSLATION)
    shifts = [_shift_of(np.asarray(x[i]), moved[i], s) for i in range(N)]
    assert len(set(shifts)) > 4, shifts  # drawn per image
    # Each input pixel that stays in view gets gradient 1, the others 0.
    grad = np.asarray(jax.grad(lambda v: augment.translate(v, key).sum())(x))
    for g, (dy, dx) in zip(grad, shifts):
        assert set(np.unique(g)) <= {0.0, 1.0}
        assert g.sum() == (SIDE - abs(dy)) * (SIDE - abs(dx)) * 3


@pytest.mark.parametrize("fraction", [augment.CUTOUT, 0.25])
def test_cutout_blanks_one_square_per_image_and_keeps_the_rest(fraction):
    x = _images()
    key = jax.random.key(5)
    out = np.asarray(augment.cut_out(x, key, fraction))
    size = round(SIDE * fraction)
    blanked = np.all(out == 0, axis=-1)
    assert np.array_equal(out[~blanked], np.asarray(x)[~blanked])  # the rest untouched
    full_squares = 0
    for b in blanked:
        rows, cols = np.nonzero(b.any(axis=1))[0], np.nonzero(b.any(axis=0))[0]
        assert 0 < len(rows) <= size and 0 < len(cols) <= size
        assert b.sum() == len(rows) * len(cols)  # one rectangle (the square, clipped at the border)
        full_squares += b.sum() == size * size
    assert full_squares >= 1
    grad = np.asarray(jax.grad(lambda v: augment.cut_out(v, key, fraction).sum())(x))
    np.testing.assert_array_equal(grad, np.repeat(~blanked[..., None], 3, -1).astype(np.float32))


def test_policies_and_their_sizes_are_read_and_checked_in_one_line_naming_the_field(tiny_config):
    assert augment.parse("") == ()
    assert augment.parse("cutout, translation") == (("cutout", augment.CUTOUT),
                                                    ("translation", augment.TRANSLATION))
    assert augment.parse("cutout:0.25,translation: 0.0625") == (("cutout", 0.25),
                                                                ("translation", 0.0625))
    for bad, named in [("flip", "flip"), ("cutout:0", "cutout:0"), ("cutout:1.5", "cutout:1.5"),
                       ("translation,cutout:big", "cutout:big")]:
        with pytest.raises(ValueError, match=rf"config.train.d_augment='{bad}': cannot read "
                                             rf"{named}; expected"):
            augment.parse(bad)
    tiny_config.train.d_augment = "translation,flip"
    assert [p for p in config_checks.problems(tiny_config, 8) if "d_augment" in p] == [
        "config.train.d_augment='translation,flip': expected a comma-separated subset "
        "of translation, cutout, each optionally with ':SIZE', a fraction of the image's side "
        "in (0, 1] ('' for none)"]


def test_a_policy_applies_each_transform_at_its_own_size():
    x = _images()
    out = np.asarray(augment.augment(x, jax.random.key(7), augment.parse("cutout:0.25")))
    blanked = np.all(out == 0, axis=-1)
    assert blanked.any() and blanked.sum(axis=(1, 2)).max() == 16  # 4x4 squares, not 8x8


@pytest.mark.parametrize("policy", ["", "translation,cutout:0.25"])
def test_the_step_shows_d_every_image_through_the_policy_in_d_loss_r1_and_g(tiny_config, monkeypatch,
                                                                            policy):
    """Traced (not compiled): with a policy, D's loss reads the 2N reals and fakes, R1 the N reals
    and G's adversarial term the N fakes through ``augment.augment``; without one nothing is
    transformed."""
    tiny_config.train.d_augment = policy
    calls = []
    real_augment = augment.augment

    def recording(images, key, names):
        calls.append((images.shape[0], key, names))
        return real_augment(images, key, names)

    monkeypatch.setattr(augment, "augment", recording)
    optimizers, graphs, abstract, batch = abstract_step_inputs(tiny_config, 3)
    n = tiny_config.train.batch_size
    step = steps.make_train_step(tiny_config, graphs, optimizers, 3)
    jax.eval_shape(step, abstract, batch)
    if not policy:
        assert calls == []
        return
    assert [c[0] for c in calls] == [2 * n, n, n]  # D's loss, R1, G's adversarial term
    assert all(c[2] == (("translation", augment.TRANSLATION), ("cutout", 0.25)) for c in calls)
