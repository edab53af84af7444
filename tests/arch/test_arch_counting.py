"""Parameters and MACs per component, counted by FlopCounterMode on the meta device."""

from __future__ import annotations

import pytest

from edgefusion.arch import count_model
from edgefusion.errors import EdgefusionError

# BK-SDM's MACs for one U-Net call on a 64x64 latent (512 px), batch 1 (the BK-SDM paper).
SD_V14_UNET_MACS = {None: 338.7e9, "base": 223.8e9, "small": 217.7e9, "tiny": 205.0e9}


@pytest.mark.parametrize("variant", list(SD_V14_UNET_MACS))
def test_sd_v14_unet_macs_match_bk_sdm(variant: str | None) -> None:
    unet = count_model("sd-v1.4", variant=variant, resolution=512).components["unet"]
    assert unet.macs == pytest.approx(SD_V14_UNET_MACS[variant], rel=0.01)


def test_sd_v14_components_at_512px() -> None:
    counts = count_model("sd-v1.4")
    assert counts.latent_size == 64
    unet, text, decoder = (counts.components[k] for k in ("unet", "text_encoder", "vae_decoder"))
    assert unet.params == 859_520_964
    assert unet.attention_macs == pytest.approx(63e9, rel=0.05)
    assert text.params == 123_060_480  # CLIP ViT-L/14 text tower
    assert decoder.params == pytest.approx(49.5e6, rel=0.005)  # the SD decoder's published size
    assert decoder.macs > 3 * unet.macs  # the decoder dominates a 1-2 step image


def test_macs_follow_the_latent_area() -> None:
    full, half = count_model("sd-v1.4", resolution=512), count_model("sd-v1.4", resolution=256)
    assert half.latent_size == 32
    for name in ("unet", "vae_decoder"):
        assert half.components[name].macs == pytest.approx(full.components[name].macs / 4, rel=0.02)
    assert half.components["text_encoder"] == full.components["text_encoder"]
    # Self-attention scores grow with the square of the token count.
    assert half.components["unet"].attention_macs < full.components["unet"].attention_macs / 8


def test_sd_v2_base_uses_its_openclip_text_encoder() -> None:
    counts = count_model("sd-v2.1-base", variant="tiny")
    assert counts.components["text_encoder"].params == pytest.approx(340e6, rel=0.01)
    assert counts.components["unet"].macs == pytest.approx(205.0e9, rel=0.01)


def test_config_alone_counts_only_the_unet(micro_config) -> None:
    counts = count_model(micro_config(), variant="tiny", resolution=64)
    assert set(counts.components) == {"unet"} and counts.latent_size == 8
    assert counts.components["unet"].macs > 0 and counts.components["unet"].attention_macs > 0


def test_pipeline_folder_uses_its_own_vae_scale(micro_pipeline) -> None:
    counts = count_model(micro_pipeline, resolution=16)
    assert set(counts.components) == {"unet", "text_encoder", "vae_decoder"}
    assert counts.latent_size == 8  # the micro VAE downsamples 2x
    assert counts.components["text_encoder"].params > 0


def test_resolution_must_divide_by_the_vae_scale() -> None:
    with pytest.raises(EdgefusionError, match="resolution 500"):
        count_model("sd-v1.4", resolution=500)
