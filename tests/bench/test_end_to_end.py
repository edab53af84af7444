"""``--vae taesd`` times TAESD beside the model's decoder and the totals decode with it; the
end-to-end fields (whole generate calls in fresh processes: first call cold and warm, the
median of the repeats, peak RSS) stand beside each composed total; a decoder that cannot read the
model's latents is a clear error before any timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import AutoencoderKL
from micro_models import micro_unet_config, random_unet, write_pipeline

from edgefusion.bench import latency
from edgefusion.bench.cli import print_table
from edgefusion.bench.latency import BenchConfig, bench
from edgefusion.errors import EdgefusionError

END_TO_END = ("end_to_end_s", "first_call_s", "first_call_warm_s", "end_to_end_peak_rss_mib")


@pytest.fixture(scope="module")
def micro_f8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro SD pipeline whose VAE has SD's 8x upsampling and 4 latent channels, as TAESD reads."""
    folder = write_pipeline(
        tmp_path_factory.mktemp("bench") / "sd-f8", random_unet(micro_unet_config((32, 32)))
    )
    AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
    ).save_pretrained(folder / "vae")
    return folder


def test_vae_taesd_and_the_end_to_end_fields(micro_f8, tmp_path, capsys, monkeypatch):
    config = BenchConfig([str(micro_f8)], resolution=64, steps=[2, 1], warmup=0, repeats=1, vae="taesd")
    config.work_dir = tmp_path
    records = bench(config)
    assert {r["component"] for r in records} == {
        "text_encoder",
        "unet_step",
        "vae_decoder",
        "tiny_decoder",
        "total",
    }
    parts = {r["component"]: r["median_s"] for r in records if r["component"] != "total"}
    totals = {r["steps"]: r for r in records if r["component"] == "total"}
    assert totals[2]["median_s"] == pytest.approx(
        parts["text_encoder"] + 2 * parts["unet_step"] + parts["tiny_decoder"]
    )
    for total in totals.values():
        assert all(total[key] > 0 for key in END_TO_END), total
        assert len(total["end_to_end_runs_s"]) == 1 and total["first_call_steps"] == 2
    assert (tmp_path / "taesd-random" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.glob("e2e-*"))  # scratch caches and images are removed
    monkeypatch.setenv("COLUMNS", "400")  # the model column holds a long temporary path
    print_table(records, "micro")
    table = capsys.readouterr().out
    assert "tiny decoder" in table and "first call, warm" in table


def test_a_decoder_for_other_latents_is_refused_before_timing(monkeypatch, micro_parts, tmp_path):
    monkeypatch.setattr(latency, "build_parts", lambda name: micro_parts(lcm=True))  # an f=2 VAE
    config = BenchConfig(["micro"], resolution=32, steps=[1], vae="taesd", end_to_end=False)
    config.work_dir = tmp_path
    with pytest.raises(EdgefusionError, match="upsampled 8x, but this model's are 4-channel, 2x"):
        bench(config)
