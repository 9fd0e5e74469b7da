"""Shared test settings and fixtures.

Many test processes share 2 cores, so torch stays single-threaded. `make_night_dir` is the
generated NIGHT-format set most tests start from (lipsim.data.synthetic.make_night in the
test's own tmp_path); `night` is the common case: 10 test triplets of 32 px, seed 0.
`server` is a running LoopbackServer (tests/loopback_server.py) for the download tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def make_night_dir(tmp_path):
    """make_night_dir(name="night", *, seed=0, n_train=0, n_val=0, n_test=10, image_size=32)
    -> the folder of a generated NIGHT set under this test's tmp_path."""
    from lipsim.data.synthetic import make_night

    def make(
        name: str = "night",
        *,
        seed: int = 0,
        n_train: int = 0,
        n_val: int = 0,
        n_test: int = 10,
        image_size: int = 32,
    ):
        return make_night(
            tmp_path / name,
            seed=seed,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            image_size=image_size,
        )

    return make


@pytest.fixture
def night(make_night_dir):
    """A generated NIGHT folder: 10 test triplets, 32 px, seed 0, no train/val."""
    return make_night_dir()


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1, stopped after the test."""
    from loopback_server import LoopbackServer

    with LoopbackServer() as srv:
        yield srv
