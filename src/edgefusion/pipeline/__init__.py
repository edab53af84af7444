"""The bottom layer of inference: what a model spec names, and loading and sampling it.

- :mod:`~edgefusion.pipeline.sources`: the one resolver of model specs (folders, registered names
  such as ``toy:teacher``, built-in architectures such as ``sd-v1.4``, single-file checkpoints);
- :mod:`~edgefusion.pipeline.load`: ``load_pipeline(spec, backend=...)`` for every backend;
- :mod:`~edgefusion.pipeline.sampling`: seeded batched generation and the settings a model
  samples with; :mod:`~edgefusion.pipeline.lcm`: what an LCM is and its guidance embedding;
- :mod:`~edgefusion.pipeline.registry`: where the packages above register model names and
  backends. This package imports none of them.

This ``__init__`` imports nothing, so registering a plug-in costs no torch import.
"""
