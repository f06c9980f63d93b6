"""Shared pytest setup: no network for wandb, deterministic seeds, small thread pools."""

import os

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002  (libraries that still draw from the global RNG)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
