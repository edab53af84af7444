"""Suite-wide settings: offline, one thread for micro models, and a cache folder of the suite's own."""

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


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """OpenVINO exports (``generate``'s default backend on CPUs with bf16) go to a folder of the
    test session, not the user's ``~/.cache/edgefusion``."""
    previous = os.environ.get("EDGEFUSION_CACHE")
    os.environ["EDGEFUSION_CACHE"] = str(tmp_path_factory.mktemp("edgefusion-cache"))
    yield
    if previous is None:
        os.environ.pop("EDGEFUSION_CACHE", None)
    else:
        os.environ["EDGEFUSION_CACHE"] = previous
