"""W8A16: int8 weights (symmetric, one scale per output channel) with 16-bit activations.

EdgeFusion deploys its U-Net this way on the Exynos NPU (paper, Sec. 4 and Table 7). Every
Conv2d and Linear is quantized, not only the Linears: 69% of SD-v1.5's U-Net weights are
convolutions, so a Linear-only quantizer would leave most of the model in 16 bits.

The transform is one in-place verb in torchao's style, ``quantize_(model, config, filter_fn)``:
the config is a validated dataclass that is saved next to the weights, and layers are chosen by a
filter on (module, fully qualified name), never by model names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgefusion.errors import EdgefusionError

ACTIVATION_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_QMAX = 127  # symmetric int8: [-127, 127], so the grid is the same on both sides of zero

FilterFn = Callable[[nn.Module, str], bool]


@dataclass(frozen=True)
class W8A16Config:
    """What :func:`quantize_` does; saved as ``quantization.json`` beside the weights.

    ``activation_dtype``: the 16-bit type activations (and dequantized weights) compute in.
    float16 is the default: bfloat16 keeps fewer mantissa bits, and its rounding error compounds
    over the sampling steps far more than int8 weights do (docs/RESULTS.md, section 6).
    ``float32`` is allowed for weight-only simulation (W8A32).

    ``skip``: fully qualified names kept in 16 bits. By default the U-Net's last convolution,
    which writes the prediction itself, so its rounding error lands in every step's output
    unfiltered, while it holds a tiny share of the weights (the measured cost of int8 there is in
    docs/RESULTS.md, section 6). Pass ``skip=()`` for int8 everywhere.
    """

    activation_dtype: str = "float16"
    skip: tuple[str, ...] = ("conv_out",)

    def __post_init__(self) -> None:
        if self.activation_dtype not in ACTIVATION_DTYPES:
            raise EdgefusionError(
                f"activation_dtype must be one of {', '.join(ACTIVATION_DTYPES)}, "
                f"got {self.activation_dtype!r}"
            )
        object.__setattr__(self, "skip", tuple(self.skip))

    @property
    def dtype(self) -> torch.dtype:
        return ACTIVATION_DTYPES[self.activation_dtype]

    def to_dict(self) -> dict:
        return {
            "method": "w8a16",
            "weight_dtype": "int8",
            "granularity": "per_output_channel",
            **asdict(self),
        }

    @classmethod
    def from_dict(cls, data: dict) -> W8A16Config:
        if data.get("method") != "w8a16":
            raise EdgefusionError(f"unknown quantization method {data.get('method')!r}; expected w8a16")
        return cls(activation_dtype=data["activation_dtype"], skip=tuple(data.get("skip", ())))


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale`` with ``scale = max|w_c| / 127``.

    Returns ``(q, scale)``; ``scale`` has one float32 entry per output channel (dim 0).
    """
    w = weight.detach().float()
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / _QMAX, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -_QMAX, _QMAX).to(torch.int8)
    return q, scale


def upcast_on_cpu(x: torch.Tensor) -> bool:
    """Whether a layer given ``x`` computes in float32 and rounds its output back to ``x.dtype``:
    16-bit input on a CPU without native kernels for that dtype (:func:`native_16bit_on_cpu`).

    Without them PyTorch's 16-bit CPU convolutions are a slow fallback (on an AVX2 CPU, a
    320-channel 3x3 convolution at 32x32 takes 4.9 s in float16 against 0.035 s in float32; a
    matmul 10x longer), so a full-size W8A16 U-Net step takes minutes and the fp16 SD decoder most
    of an hour. Computing in float32 from the same 16-bit inputs and weights and rounding once is
    what a 16-bit kernel that accumulates in float32 does (within one unit in the last place of
    PyTorch's own CPU kernel): activations between layers stay 16-bit. CPUs with native 16-bit
    arithmetic (AVX512-BF16, AMX) keep their faster 16-bit kernels.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float16, torch.bfloat16):
        return False
    return not native_16bit_on_cpu(x.dtype)


@functools.cache
def native_16bit_on_cpu(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native CPU kernels for ``dtype`` (bfloat16: AVX512-BF16 or AMX;
    float16: AVX512-FP16 or AMX-FP16) on this machine."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def _float32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


class _W8A16Mixin(nn.Module):
    """int8 weight + float32 scale as buffers; the weight is dequantized into the input's dtype."""

    def _init_quantized(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        q, scale = quantize_weight(weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.weight_int8.dim() - 1)
        return self.weight_int8.to(dtype) * self.weight_scale.reshape(shape).to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, for code that reads ``layer.weight`` (dtype/shape checks)."""
        return self.dequantized_weight(self.weight_scale.dtype if self.bias is None else self.bias.dtype)


class W8A16Linear(_W8A16Mixin):
    """A Linear whose weight is stored as int8 per output channel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_quantized(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = self.dequantized_weight(x.dtype)
        if upcast_on_cpu(x):
            return F.linear(x.float(), weight.float(), _float32(bias)).to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=int8"


class W8A16Conv2d(_W8A16Mixin):
    """A Conv2d whose weight is stored as int8 per output channel."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise EdgefusionError(f"W8A16 supports zero-padded convolutions only, got {conv.padding_mode!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self._init_quantized(conv.weight, conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = self.dequantized_weight(x.dtype)
        args = (self.stride, self.padding, self.dilation, self.groups)
        if upcast_on_cpu(x):
            return F.conv2d(x.float(), weight.float(), _float32(bias), *args).to(x.dtype)
        return F.conv2d(x, weight, bias, *args)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, weight=int8"
        )


QUANTIZED_TYPES = (W8A16Linear, W8A16Conv2d)


class CpuUpcastLinear(nn.Linear):
    """An ``nn.Linear`` that computes 16-bit CPU input in float32 (:func:`upcast_on_cpu`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if upcast_on_cpu(x):
            return F.linear(x.float(), self.weight.float(), _float32(self.bias)).to(x.dtype)
        return super().forward(x)


class CpuUpcastConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes 16-bit CPU input in float32 (:func:`upcast_on_cpu`)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if upcast_on_cpu(x):
            return super()._conv_forward(x.float(), weight.float(), _float32(bias)).to(x.dtype)
        return super()._conv_forward(x, weight, bias)


def upcast_16bit_layers_on_cpu(model: nn.Module) -> nn.Module:
    """Make every plain ``nn.Linear`` and ``nn.Conv2d`` of ``model`` compute 16-bit CPU input in
    float32 (:func:`upcast_on_cpu`), in place: the 16-bit text encoder and VAE of a W8A16 pipeline
    run at float32 speed on a CPU, with the same weights and state dict, their outputs still 16-bit.
    The layers keep their parameters; only their class changes, to a subclass that overrides the
    computation."""
    upcast = {nn.Linear: CpuUpcastLinear, nn.Conv2d: CpuUpcastConv2d}
    for module in model.modules():
        if type(module) in upcast:
            module.__class__ = upcast[type(module)]
    return model


def default_filter(module: nn.Module, name: str) -> bool:
    """Every Conv2d and Linear (the paper quantizes the whole U-Net)."""
    return isinstance(module, nn.Conv2d | nn.Linear)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QUANTIZED_TYPES) for m in model.modules())


def quantize_(model: nn.Module, config: W8A16Config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Replace, in place, each layer chosen by ``filter_fn`` with its W8A16 version; cast the rest
    (norms, biases, embeddings) to ``config.activation_dtype``. Returns ``model``.

    Raises :class:`EdgefusionError` on a model that is already quantized: quantizing twice
    would silently round the int8 grid again.
    """
    if is_quantized(model):
        raise EdgefusionError(
            "this model is already W8A16-quantized; quantize the fp32/fp16 original instead"
        )
    _check_skip_names(model, config.skip)
    chosen = filter_fn or default_filter
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if name not in config.skip and isinstance(module, nn.Conv2d | nn.Linear) and chosen(module, name)
    ]
    if not targets:
        raise EdgefusionError("no Conv2d or Linear layer matched the quantization filter")
    for name, module in targets:
        quantized = W8A16Linear(module) if isinstance(module, nn.Linear) else W8A16Conv2d(module)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, quantized)
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if param.is_floating_point():
                setattr(module, pname, nn.Parameter(param.detach().to(config.dtype), requires_grad=False))
        for bname, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and bname != "weight_scale":
                setattr(module, bname, buffer.to(config.dtype))
    return model


def _check_skip_names(model: nn.Module, skip: tuple[str, ...]) -> None:
    """Refuse ``skip`` names that match no Conv2d or Linear of ``model``: a typo would silently
    quantize the layer the user meant to keep in 16 bits."""
    layers = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    unknown = sorted(set(skip) - set(layers))
    if unknown:
        examples = ", ".join([*layers[:3], *layers[-2:]])
        raise EdgefusionError(
            f"skip (--keep-16bit) names no Conv2d or Linear layer of this model: {', '.join(unknown)}; "
            f"layer names are fully qualified, e.g. {examples}"
        )
