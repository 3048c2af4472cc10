"""Test-wide setup. The Hugging Face variables are read when huggingface_hub is first imported,
OMP_WAIT_POLICY when torch loads OpenMP and TRITON_INTERPRET when a Triton kernel is defined, so they
are set here, before any test module imports them."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads its OpenMP runtime
os.environ.setdefault("TRITON_INTERPRET", "1")  # tests have no GPU: Triton kernels run on its CPU interpreter

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module of tiny tensors: there thread start-up dominates, and on a
    loaded 2-core machine OpenMP waits turn milliseconds into seconds per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
