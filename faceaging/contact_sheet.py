"""``--mode=contact_sheet``: SynthFaces identities (rows) rendered at a list of ages (columns)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from faceaging import grids
from faceaging.datasets import synthfaces
from faceaging.workdir import Workdir


def contact_sheet(seed: int, identities: int, ages, cell: int = 100) -> np.ndarray:
    """Identities (rows) x ages (columns) of SynthFaces renders."""
    cells = np.stack([
        np.stack([np.asarray(Image.fromarray(synthfaces.render(synthfaces.make_identity(seed, i), a, seed))
                             .resize((cell, cell), Image.LANCZOS)) for a in ages])
        for i in range(identities)])
    return grids.labelled_grid(cells, [f"age {a}" for a in ages])


def write_contact_sheet(seed: int, identities: int, ages, workdir: str) -> str:
    """Writes the sheet of the first ``identities`` identities at ``ages`` into ``workdir``."""
    path = Workdir(workdir).contact_sheet
    grids.save_png(contact_sheet(seed, identities, ages), path)
    return path
