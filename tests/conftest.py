"""Shared test settings: many test processes share 2 cores, so keep torch single-threaded."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
