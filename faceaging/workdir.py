"""Where everything of a run lives: the one list of paths a workdir holds (local or gs://).

    WORKDIR/
      config.json                the config the run was trained with
      checkpoints/STEP/          Orbax: the train state, the data iterator and the config of STEP
      checkpoints_set_aside/     steps that did not restore or followed --restore_step
                                 (``checkpointing.SET_ASIDE``)
      train.lock                 host and PID of the running trainer (``workdir_lock``)
      samples/step_STEP.png      aging grids of validation faces written while training
      tensorboard/               event files (training scalars, sample grids, eval means)
      eval/STEP.json, STEP.md    --mode=eval reports
      age_estimator/STEP/        the evaluation age estimator (--mode=train_estimator)
      trait_classifier/STEP/     the SynthFaces trait classifier (--mode=train_traits)
      age_guide/STEP/            the frozen age classifier of G's loss (loss.age_guide > 0)
      attribute_guide/STEP/      the frozen gender/race classifier (loss.attribute_guide > 0)
      held_out_aging.png         --mode=all's grid of held-out faces
      dataset_stats.png          --mode=stats's bar chart
      contact_sheet.png          --mode=contact_sheet's SynthFaces sheet
"""

from __future__ import annotations

import dataclasses

from faceaging import files


@dataclasses.dataclass(frozen=True)
class Workdir:
    root: str

    def __post_init__(self):
        object.__setattr__(self, "root", files.absolute(self.root))

    def _path(self, *parts) -> str:
        return files.join(self.root, *parts)

    @property
    def config(self) -> str:
        return self._path("config.json")

    @property
    def checkpoints(self) -> str:
        return self._path("checkpoints")

    @property
    def tensorboard(self) -> str:
        return self._path("tensorboard")

    @property
    def age_estimator(self) -> str:
        return self._path("age_estimator")

    @property
    def age_guide(self) -> str:
        return self._path("age_guide")

    @property
    def attribute_guide(self) -> str:
        return self._path("attribute_guide")

    @property
    def trait_classifier(self) -> str:
        return self._path("trait_classifier")

    @property
    def held_out_grid(self) -> str:
        return self._path("held_out_aging.png")

    @property
    def dataset_stats(self) -> str:
        return self._path("dataset_stats.png")

    @property
    def contact_sheet(self) -> str:
        return self._path("contact_sheet.png")

    def sample_grid(self, step: int) -> str:
        return self._path("samples", f"step_{step:07d}.png")

    def eval_report(self, step: int, suffix: str) -> str:
        """``eval/STEP.json`` or ``eval/STEP.md``."""
        return self._path("eval", f"{step}{suffix}")


def of_checkpoint(path: str) -> tuple[Workdir, int]:
    """(workdir, step) of a ``WORKDIR/checkpoints/STEP`` path; ValueError for anything else."""
    step_dir = files.absolute(path.rstrip("/"))
    checkpoints, name = files.dirname(step_dir), files.basename(step_dir)
    if not name.isdigit() or files.basename(checkpoints) != "checkpoints":
        raise ValueError(f"{path!r}: expected WORKDIR/checkpoints/STEP")
    return Workdir(files.dirname(checkpoints)), int(name)
