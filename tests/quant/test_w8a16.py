"""W8A16 quantization: the int8 grid, the in-place transform, save/load, calibration, the CLI."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from micro_models import random_unet
from torch import nn
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

from edgefusion.cli import _register_subcommands, app
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.load import load_pipeline
from edgefusion.quant.io import load_quantized_pipeline
from edgefusion.quant.quantize import quantize_pipeline, unet_bytes
from edgefusion.quant.w8a16 import (
    CpuUpcastConv2d,
    CpuUpcastLinear,
    W8A16Config,
    W8A16Conv2d,
    W8A16Linear,
    quantize_,
    quantize_weight,
    upcast_16bit_layers_on_cpu,
)


def _unet_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500, 20]), torch.randn(2, 7, 32, generator=g)


def test_quantize_weight_is_symmetric_per_output_channel():
    weight = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).reshape(6, 1, 1, 1)
    q, scale = quantize_weight(weight)
    assert q.dtype == torch.int8 and scale.shape == (6,)
    assert torch.equal(q.reshape(6, -1).abs().amax(dim=1), torch.full((6,), 127, dtype=torch.int8))
    error = (q.float() * scale.reshape(-1, 1, 1, 1) - weight).abs()
    assert torch.all(error <= scale.reshape(-1, 1, 1, 1) / 2 + 1e-7)


def test_quantize_replaces_every_conv_and_linear_except_skipped():
    unet = random_unet()
    layers = {n for n, m in unet.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    quantize_(unet, W8A16Config(activation_dtype="float32"))
    quantized = {n for n, m in unet.named_modules() if isinstance(m, W8A16Conv2d | W8A16Linear)}
    assert quantized == layers - {"conv_out"}
    assert isinstance(unet.conv_out, nn.Conv2d)
    assert (
        sum(isinstance(unet.get_submodule(n), W8A16Conv2d) for n in quantized) > 10
    )  # convs, not just Linears


def test_quantized_unet_stays_close_to_fp32():
    reference = random_unet()
    unet = quantize_(random_unet(), W8A16Config(activation_dtype="float32", skip=()))
    with torch.no_grad():
        expected = reference(*_unet_inputs()).sample
        got = unet(*_unet_inputs()).sample
    assert (got - expected).norm() / expected.norm() < 0.02
    assert not torch.equal(got, expected)


def _conv_then_linear() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(1), nn.Linear(16 * 36, 8)).eval()


def _float32_rounded(model: nn.Sequential, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The model computed in float32 from 16-bit inputs and weights, each layer rounded once."""
    conv, linear = model[0], model[2]
    hidden = F.conv2d(x.float(), weights[0].float(), conv.bias.float(), padding=1).half()
    return F.linear(hidden.flatten(1).float(), weights[1].float(), linear.bias.float()).half()


class _ComputeDtypes(TorchFunctionMode):
    """Records the input dtype of every convolution and matmul computed under it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.conv2d, F.linear):
            self.seen.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("native", [False, True])
def test_16bit_layers_on_a_cpu_compute_in_float32_and_round_once(monkeypatch, native):
    """PyTorch's 16-bit CPU convolutions are a slow fallback where the CPU has no native 16-bit
    kernels: there W8A16 layers and the upcast plain layers compute from the same 16-bit tensors
    in float32, rounding each output once, so activations stay 16-bit. Where it has them (AMX),
    they compute in 16 bits."""
    import edgefusion.quant.w8a16

    monkeypatch.setattr(edgefusion.quant.w8a16, "native_16bit_on_cpu", lambda dtype: native)
    x = torch.randn(2, 8, 6, 6).half()
    plain = _conv_then_linear().half()
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    upcast_16bit_layers_on_cpu(plain)
    assert isinstance(plain[0], CpuUpcastConv2d) and isinstance(plain[2], CpuUpcastLinear)
    assert all(torch.equal(value, plain.state_dict()[name]) for name, value in state.items())
    quantized = quantize_(_conv_then_linear(), W8A16Config(skip=()))
    dequantized = [
        quantized[0].dequantized_weight(torch.float16),
        quantized[2].dequantized_weight(torch.float16),
    ]
    for model, weights in ((plain, [plain[0].weight, plain[2].weight]), (quantized, dequantized)):
        with torch.no_grad(), _ComputeDtypes() as computed:
            got = model(x)
        assert got.dtype == torch.float16
        if native:
            assert computed.seen == [torch.float16, torch.float16]
            continue
        assert computed.seen == [torch.float32, torch.float32]
        assert torch.equal(got, _float32_rounded(model, weights, x))


def test_quantizing_twice_is_an_error():
    unet = quantize_(random_unet(), W8A16Config())
    with pytest.raises(EdgefusionError, match="already W8A16"):
        quantize_(unet, W8A16Config())


def test_bad_activation_dtype_is_an_error():
    with pytest.raises(EdgefusionError, match="activation_dtype"):
        W8A16Config(activation_dtype="int4")


def test_saved_pipeline_loads_back_and_is_small(micro_pipeline, tmp_path):
    out = quantize_pipeline(micro_pipeline, tmp_path / "q", W8A16Config(activation_dtype="float32"))
    in_memory = quantize_(load_pipeline(micro_pipeline).unet, W8A16Config(activation_dtype="float32"))
    loaded = load_quantized_pipeline(out)
    with torch.no_grad():
        assert torch.equal(loaded.unet(*_unet_inputs()).sample, in_memory(*_unet_inputs()).sample)
    fp32, stored = unet_bytes(out)
    assert fp32 == unet_bytes(micro_pipeline)[0]
    assert stored < 0.3 * fp32  # micro layers are narrow, so scales weigh more than at real sizes
    assert loaded.text_encoder.dtype == torch.float32  # loaded in the config's activation dtype
    with pytest.raises(EdgefusionError, match="already W8A16"):
        quantize_pipeline(out, tmp_path / "again")
    # Wherever a model folder is accepted (generate, toy eval), the quantized one loads as such.
    generic = load_pipeline(out)
    with torch.no_grad():
        assert torch.equal(generic.unet(*_unet_inputs()).sample, loaded.unet(*_unet_inputs()).sample)


def test_plain_diffusers_names_the_loader_of_a_quantized_folder(micro_pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline

    from edgefusion.provenance import PROVENANCE_FILE

    source = tmp_path / "src"
    shutil.copytree(micro_pipeline, source)
    (source / "unet" / PROVENANCE_FILE).write_text(json.dumps({"stage": "lcm", "guidance_scale": 3.5}))
    out = quantize_pipeline(source, tmp_path / "q", W8A16Config(activation_dtype="float32"))
    with pytest.raises(EdgefusionError, match="edgefusion.pipeline.load.load_pipeline"):
        StableDiffusionPipeline.from_pretrained(out)
    # The recorded guidance travels with the quantized folder.
    assert json.loads((out / "unet" / PROVENANCE_FILE).read_text())["guidance_scale"] == 3.5


def test_calibration_records_a_range_per_quantized_layer(micro_pipeline, tmp_path):
    out = quantize_pipeline(
        micro_pipeline, tmp_path / "q", calibration_prompts=["a red circle"], calibration_steps=2
    )
    ranges = json.loads((out / "unet" / "activation_ranges.json").read_text())
    quantized = {
        n
        for n, m in load_quantized_pipeline(out).unet.named_modules()
        if isinstance(m, W8A16Linear | W8A16Conv2d)
    }
    assert set(ranges) == quantized
    assert all(r["input"][0] <= r["input"][1] and r["output"][0] <= r["output"][1] for r in ranges.values())


def test_cli_report_json(micro_pipeline, tmp_path):
    _register_subcommands()
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            str(micro_pipeline),
            "--out",
            str(tmp_path / "q"),
            "--report",
            "--json",
            "--prompts",
            "4",
            "--steps",
            "2",
            "--keep-16bit",
            "",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["unet_bytes_quantized"] < 0.3 * report["unet_bytes_fp32"]
    assert report["psnr_db"] > 20
    assert "accuracy_all" in report["toy_delta"]  # the micro pipeline uses the toy tokenizer
