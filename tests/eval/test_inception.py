"""The pytorch-fid Inception: state-dict layout, output shapes, and clear errors without weights."""

from pathlib import Path

import pytest
import torch

from edgefusion.errors import EdgefusionError
from edgefusion.eval.inception import FEATURE_DIM, NUM_CLASSES, WEIGHTS_FILE, FIDInception, load_inception


def test_loads_a_pytorch_fid_state_dict_and_gives_pool_features_and_logits(tmp_path: Path):
    torch.manual_seed(0)
    state = {k: v for k, v in FIDInception().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / WEIGHTS_FILE
    torch.save(state, path)
    model = load_inception(path)
    assert torch.equal(model.fc.weight, state["fc.weight"])
    with torch.no_grad():
        pool, logits = model(torch.rand(2, 3, 64, 64))
    assert pool.shape == (2, FEATURE_DIM) and logits.shape == (2, NUM_CLASSES)
    assert torch.allclose(logits, pool @ state["fc.weight"].T)


def test_missing_or_wrong_weights_name_the_file_to_pass(tmp_path: Path):
    with pytest.raises(EdgefusionError, match=WEIGHTS_FILE):
        load_inception(None)
    with pytest.raises(EdgefusionError, match="not found"):
        load_inception(tmp_path / "nope.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    with pytest.raises(EdgefusionError, match="not the pytorch-fid Inception"):
        load_inception(wrong)
