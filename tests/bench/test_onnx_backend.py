"""The graph backends (onnxruntime, OpenVINO) feed each exported graph the inputs it declares (names,
dtypes, ranks)."""

import statistics

import pytest

from edgefusion.bench import latency
from edgefusion.bench import onnx as bench_onnx
from edgefusion.bench.latency import BenchConfig, bench

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def _graph(path, inputs, output, op_input):
    """A one-node graph (Identity or Cast to float) with the export's input and output names."""
    node = (
        helper.make_node("Cast", [op_input], [output], to=TensorProto.FLOAT)
        if inputs[op_input][0] == TensorProto.INT64
        else helper.make_node("Identity", [op_input], [output])
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, shape) for n, (t, shape) in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
    )
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _tiny_export(folder):
    """The layout of ``edgefusion.export.onnx.export_pipeline``, for an LCM micro model."""
    f, i = TensorProto.FLOAT, TensorProto.INT64
    _graph(
        folder / "text_encoder" / "model.onnx", {"input_ids": (i, ["b", 8])}, "last_hidden_state", "input_ids"
    )
    unet_inputs = {
        "sample": (f, ["b", 4, 4, 4]),
        "timestep": (f, ["b"]),  # float in the export: the runner casts the int64 timesteps
        "encoder_hidden_states": (f, ["b", 8, 16]),
        "timestep_cond": (f, ["b", 8]),
    }
    _graph(folder / "unet" / "model.onnx", unet_inputs, "out_sample", "sample")
    _graph(
        folder / "vae_decoder" / "model.onnx", {"latent_sample": (f, [1, 4, 4, 4])}, "sample", "latent_sample"
    )
    return folder


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "openvino-bf16"])
def test_graph_backends_time_each_exported_component(monkeypatch, tmp_path, micro_parts, backend):
    if backend.startswith("openvino"):
        pytest.importorskip("openvino")
    folder = _tiny_export(tmp_path / "export")
    monkeypatch.setattr(latency, "build_parts", lambda name: micro_parts(lcm=True))
    monkeypatch.setattr(bench_onnx, "exported_folder", lambda name, parts, work_dir: folder)
    config = BenchConfig(["micro"], resolution=8, steps=[2], backends=[backend], repeats=2, end_to_end=False)
    records = bench(config)
    rows = {r["component"]: r for r in records}
    assert set(rows) == {"text_encoder", "unet_step", "vae_decoder", "total"}
    assert all(r["backend"] == backend for r in records)
    assert rows["unet_step"]["median_s"] == statistics.median(rows["unet_step"]["runs_s"])


def test_a_builtin_architecture_is_saved_exported_and_timed(monkeypatch, tmp_path, micro_parts):
    pytest.importorskip("edgefusion.export.onnx")
    monkeypatch.setattr(bench_onnx, "ARCHITECTURES", {"micro-lcm": None})
    monkeypatch.setattr(latency, "build_parts", lambda name: micro_parts(lcm=True))
    config = BenchConfig(
        ["micro-lcm"], resolution=8, steps=[1], backends=["onnxruntime", "torch-fp32"], repeats=1
    )
    config.work_dir, config.end_to_end = tmp_path, False
    records = bench(config)
    assert (tmp_path / "micro-lcm" / "pipeline" / "model_index.json").exists()
    assert (tmp_path / "micro-lcm" / "onnx-fp32" / "unet" / "model.onnx").exists()
    assert {(r["backend"], r["component"]) for r in records} >= {
        ("onnxruntime", "unet_step"),
        ("torch-fp32", "total"),
    }
