"""Identity kept: cosine similarity of input and aged image by a user-supplied face embedder."""

from __future__ import annotations

import numpy as np

from faceaging import face_embedding
from faceaging.evaluators import common

WEIGHTS_FILE = "face_embedding.onnx"


class Evaluator(common.Evaluator):
    name = "identity"

    def __init__(self, ctx: common.Context):
        c = ctx.eval_config
        self.embedder = common.optional_weights(
            c.identity_weights, WEIGHTS_FILE, c, lambda path: face_embedding.FaceEmbedder(path, c),
            "identity_similarity")
        self.input_embeddings = self.embedder(ctx.images)

    def per_image(self, group, aged):
        return {"identity_similarity": np.asarray(face_embedding.cosine_similarity(
            self.input_embeddings, self.embedder(aged)))}

    def summary(self):
        return {"identity_weights_sha256": self.embedder.sha256}
