"""Training stages and the machinery they share.

- :mod:`~edgefusion.train.denoise`: SD's own objective (``edgefusion train``).
- :mod:`~edgefusion.train.kd`: BK-SDM knowledge distillation (``edgefusion distill``).
- :mod:`~edgefusion.train.lcm`: latent consistency distillation (``edgefusion lcm``).
- Shared by every stage: :mod:`~edgefusion.train.stage` (the run around a stage's method:
  opening it, frozen models, data, training, the written pipeline, the report),
  :mod:`~edgefusion.train.config` (config dataclasses, YAML, overrides),
  :mod:`~edgefusion.train.data` (imagefolder / WebDataset pairs, latent cache, deterministic
  stream), :mod:`~edgefusion.train.loop` (the accelerate loop), :mod:`~edgefusion.train.checkpoint`,
  :mod:`~edgefusion.train.ema`, :mod:`~edgefusion.train.features` (hooks by module name),
  :mod:`~edgefusion.train.losses` and :mod:`~edgefusion.train.models` (loading and saving U-Nets
  and pipelines).
"""
