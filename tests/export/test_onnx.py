"""ONNX export and the onnxruntime pipeline: layout, parity with torch, W8A16 QDQ, LCM, errors."""

import json

import onnx
import pytest
import torch
from diffusers import UNet2DConditionModel
from micro_models import random_unet

import edgefusion.export.onnx as onnx_export
from edgefusion.errors import EdgefusionError
from edgefusion.export import layout
from edgefusion.export.onnx import export_pipeline
from edgefusion.export.runtime import OrtSession, load_onnx_pipeline
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors
from edgefusion.quant.quantize import psnr_db, quantize_pipeline
from edgefusion.quant.w8a16 import W8A16Config, quantize_
from edgefusion.tiling.apply import tile_pipeline

PROMPTS = [
    "a small red circle at the left on a blue background",
    "a large green square on a white background",
]


def _images(pipe, steps=3, guidance=7.5, size=None):
    return generate_tensors(pipe, PROMPTS, [0, 1], steps, guidance, height=size, width=size)


def _io_names(file):
    graph = onnx.load(str(file), load_external_data=False).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


@pytest.fixture(scope="module")
def fp32_export(micro_pipeline, tmp_path_factory):
    return export_pipeline(micro_pipeline, tmp_path_factory.mktemp("onnx") / "fp32")


def test_layout_and_names(fp32_export):
    assert _io_names(fp32_export / "text_encoder" / "model.onnx") == (["input_ids"], ["last_hidden_state"])
    assert _io_names(fp32_export / "unet" / "model.onnx") == (
        ["sample", "timestep", "encoder_hidden_states"],
        ["out_sample"],
    )
    assert _io_names(fp32_export / "vae_decoder" / "model.onnx") == (["latent_sample"], ["sample"])
    assert (fp32_export / "tokenizer" / "tokenizer_config.json").exists()
    assert (fp32_export / "scheduler" / "scheduler_config.json").exists()
    info = json.loads((fp32_export / "edgefusion_export.json").read_text())
    assert info["precision"] == "fp32" and info["sample_size"] == [8, 8] and info["dynamic_spatial"]


def test_each_graph_is_one_self_contained_file(fp32_export):
    for component in ("text_encoder", "unet", "vae_decoder"):
        assert [p.name for p in (fp32_export / component).iterdir()] == ["model.onnx"]


def test_a_graph_over_2_gb_gathers_its_tensors_into_one_data_file(tmp_path, monkeypatch):
    """Over protobuf's limit the tracer writes one file per tensor beside the graph; the export
    gathers them into ``model.onnx.data`` (the limit is lowered here to make a small graph large)."""
    real_export = torch.onnx.export

    def export_per_tensor(model, args, file, **kwargs):
        real_export(model, args, file, **kwargs)
        onnx.save_model(
            onnx.load(file), file, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
        )

    monkeypatch.setattr(torch.onnx, "export", export_per_tensor)
    monkeypatch.setattr(layout, "_PROTOBUF_LIMIT", 0)
    linear = torch.nn.Linear(32, 32).eval()  # a weight over onnx's 1 KiB external-data threshold
    file = tmp_path / "linear" / "model.onnx"
    onnx_export._export(linear, (torch.ones(2, 32),), file, ["x"], ["y"], {"x": {0: "batch"}})

    assert sorted(p.name for p in file.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    with torch.no_grad():
        expected = linear(torch.ones(5, 32))
    assert torch.allclose(OrtSession(file, threads=1)(x=torch.ones(5, 32)), expected, atol=1e-6)


def test_onnxruntime_matches_torch(micro_pipeline, fp32_export):
    expected = _images(load_pipeline(micro_pipeline))
    onnx_pipe = load_onnx_pipeline(fp32_export)
    assert not onnx_pipe.is_lcm and onnx_pipe.default_size == 16
    assert psnr_db(_images(onnx_pipe), expected) >= 40
    bigger = _images(onnx_pipe, steps=1, size=32)  # dynamic spatial axes
    assert bigger.shape == (2, 3, 32, 32)


def test_w8a16_export_is_int8_qdq_and_matches_torch_w8a16(micro_pipeline, fp32_export, tmp_path):
    out = export_pipeline(micro_pipeline, tmp_path / "w8a16", precision="w8a16")
    graph = onnx.load(str(out / "unet" / "model.onnx")).graph
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert len(dequant) == len(int8) > 20
    unet_bytes = (out / "unet" / "model.onnx").stat().st_size
    assert unet_bytes < 0.4 * (fp32_export / "unet" / "model.onnx").stat().st_size
    # torch W8A16 with fp32 activations rounds the same weights the same way
    unet = quantize_(load_pipeline(micro_pipeline).unet, W8A16Config(activation_dtype="float32"))
    g = torch.Generator().manual_seed(0)
    sample, hidden = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        expected = unet(sample, torch.tensor([500, 20]), hidden).sample
    session = load_onnx_pipeline(out).unet
    got = session(sample=sample, timestep=torch.tensor([500.0, 20.0]), encoder_hidden_states=hidden)
    assert (got - expected).abs().max() < 1e-4


def test_lcm_export_takes_the_guidance_embedding(micro_lcm_pipeline, tmp_path):
    out = export_pipeline(micro_lcm_pipeline, tmp_path / "lcm")
    assert _io_names(out / "unet" / "model.onnx")[0] == [
        "sample",
        "timestep",
        "encoder_hidden_states",
        "timestep_cond",
    ]
    onnx_pipe = load_onnx_pipeline(out)
    assert onnx_pipe.is_lcm
    expected = _images(load_pipeline(micro_lcm_pipeline), steps=2, guidance=4.0)
    assert psnr_db(_images(onnx_pipe, steps=2, guidance=4.0), expected) >= 40


def test_tiled_export_has_tiled_softmax_and_fixed_size(micro_pipeline, tmp_path):
    tiled = tile_pipeline(micro_pipeline, tmp_path / "tiled", sram_bytes=16 * 1024, resolution=16)
    out = export_pipeline(tiled, tmp_path / "onnx")
    graph = onnx.load(str(out / "unet" / "model.onnx")).graph
    untiled_softmax = len(random_unet().attn_processors)  # one per attention module
    assert sum(n.op_type == "Softmax" for n in graph.node) > untiled_softmax
    info = json.loads((out / "edgefusion_export.json").read_text())
    assert not info["dynamic_spatial"] and info["tiling"]
    onnx_pipe = load_onnx_pipeline(out)
    reference = _images(load_pipeline(micro_pipeline), steps=2)
    assert psnr_db(_images(onnx_pipe, steps=2), reference) >= 40
    with pytest.raises(EdgefusionError, match="runs at 16x16 only"):
        _images(onnx_pipe, steps=1, size=32)


def test_unexportable_inputs_are_clear_errors(micro_pipeline, tmp_path):
    quantized = quantize_pipeline(micro_pipeline, tmp_path / "q")
    with pytest.raises(EdgefusionError, match="W8A16 torch folder"):
        export_pipeline(quantized, tmp_path / "x")
    with pytest.raises(EdgefusionError, match="precision"):
        export_pipeline(micro_pipeline, tmp_path / "y", precision="int4")
    pipe = load_pipeline(micro_pipeline)
    config = {**pipe.unet.config, "class_embed_type": "timestep"}
    pipe.unet = UNet2DConditionModel.from_config(config)
    pipe.save_pretrained(tmp_path / "odd")
    with pytest.raises(EdgefusionError, match="SD-v1/v2-style"):
        export_pipeline(tmp_path / "odd", tmp_path / "z")
    assert not (tmp_path / "z").exists()


def test_load_rejects_a_folder_that_is_not_an_export(micro_pipeline):
    with pytest.raises(EdgefusionError, match="not an ONNX export"):
        load_onnx_pipeline(micro_pipeline)


def test_fp16_export_writes_half_precision_graphs(micro_pipeline, tmp_path):
    out = export_pipeline(micro_pipeline, tmp_path / "fp16", precision="fp16")
    graph = onnx.load(str(out / "unet" / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    floats = [i for i in graph.initializer if len(i.dims) >= 2]
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in floats)
