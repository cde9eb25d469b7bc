"""Small supervised networks (the evaluation age estimator and trait classifier, the age
guide): a plain CNN, a training loop, and saving/loading of their parameters."""

from __future__ import annotations


from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from faceaging import datasets, files, input_pipeline, pixels, schedules


class ConvNet(nnx.Module):
    """3x3 convolutions (stride 2 unless ``strides`` says), global average pool, linear head."""

    def __init__(self, channels, outputs: int, strides=None, *, rngs: nnx.Rngs):
        chans = [3, *channels]
        strides = strides or (2,) * len(channels)
        self.convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=s, rngs=rngs)
                               for i, o, s in zip(chans[:-1], chans[1:], strides)])
        self.head = nnx.Linear(chans[-1], outputs, rngs=rngs)

    def features(self, images) -> list:
        """The activation map after each convolution (strided: each smaller than the last)."""
        maps, h = [], images
        for conv in self.convs:
            h = jax.nn.gelu(conv(h))
            maps.append(h)
        return maps

    def __call__(self, images):
        return self.head(self.features(images)[-1].mean(axis=(1, 2)))


def fit(graph, params, learning_rate: float, loss_of_logits, batches, what: str,
        check_stop=None):
    """Trains ``params`` with AdamW on (uint8 images, labels) ``batches``; returns the params.

    ``loss_of_logits(logits, labels)`` is the scalar loss; progress is logged ten times.
    ``check_stop(doing)``, when given, is called before each step and may raise to stop it
    (``stopping.StopRequests.check_before_the_loop``).
    """
    optimizer = optax.adamw(learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss_fn(p):
            return loss_of_logits(nnx.merge(graph, p)(pixels.to_float(images, jnp.float32)), labels)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    total = len(batches)
    for step, (images, labels) in enumerate(batches, 1):
        if check_stop is not None:
            check_stop(f"training the {what}")
        params, opt_state, loss = train_step(params, opt_state, images, labels)
        if step % max(1, total // 10) == 0:
            logging.info("%s step %d/%d: loss %.4f", what, step, total, float(loss))
    return params


def fit_on_training_images(config, model: nnx.Module, label: str, steps: int, batch_size: int,
                           learning_rate: float, loss_of_logits, what: str, check_stop=None):
    """Trains ``model`` on the training split of ``config``'s dataset, labels from the batches'
    ``label`` field ('age' or 'source', the age group; ``check_stop``: see ``fit``).
    -> (builder, schedule, graph, params)."""
    schedule = schedules.get_schedule(config.data.schedule)
    builder = datasets.prepare(config)
    source = input_pipeline.open_split(builder, "train", schedule)
    iterator = iter(input_pipeline.make_train_loader(config, source, schedule.num_groups,
                                                     batch_size=batch_size))

    def draw():
        batch = next(iterator)
        return batch["image"], batch[label]

    graph, params = nnx.split(model)
    params = fit(graph, params, learning_rate, loss_of_logits, Batches(draw, steps), what,
                 check_stop)
    return builder, schedule, graph, params


class Batches:
    """``steps`` batches drawn from ``draw()``, with a length for progress logging."""

    def __init__(self, draw, steps: int):
        self.draw, self.steps = draw, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.draw() for _ in range(self.steps))


def save_params(root: str, step: int, params) -> None:
    """Saves a network's parameters as an Orbax checkpoint ``root/step``."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(files.epath_of(files.join(root, str(step))), params, force=True)
    checkpointer.wait_until_finished()


def load_params(root: str, make_model, what: str, mode: str):
    """(graph, params) of the latest checkpoint under ``root`` of the model ``make_model()`` builds."""
    saved = sorted(int(d) for d in files.listdir(root) if d.isdigit()) if files.isdir(root) else []
    if not saved:
        raise FileNotFoundError(f"no {what} in {root}: run --mode={mode} first")
    graph, abstract = nnx.split(nnx.eval_shape(make_model))
    return graph, ocp.StandardCheckpointer().restore(
        files.epath_of(files.join(root, str(saved[-1]))), abstract)
