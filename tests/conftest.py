"""Suite-wide settings: offline, and one thread for micro models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import edgefusion.toy  # noqa: E402, F401  (registers toy:NAME and the toy evaluator, as the command line does)


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from threads, and two threads fighting another job on two cores
    make each op 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps process-wide singletons; each test (training tests open an accelerator
    each) starts from none."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
