"""Tiny image decoders: ``edgefusion decoder distill`` and ``edgefusion decoder compare``.

- :mod:`~edgefusion.decoder.distill`: trains a decoder in diffusers' ``AutoencoderTiny`` layout
  (TAESD's) to reproduce a pipeline's VAE decoder, and writes the pipeline with it as its VAE.
- :mod:`~edgefusion.decoder.compare`: how close a tiny decoder's images are to the full
  decoder's (PSNR on the same latents, and end to end with the same seeds) and how fast it is.

Swapping a decoder into a loaded pipeline (``--vae`` of the sampling commands) is the inference
layer's: :mod:`edgefusion.pipeline.vae`.
"""
