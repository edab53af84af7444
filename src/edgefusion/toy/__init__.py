"""The toy world: coloured shapes, with its own tiny CLIP, VAE and SD teacher, and exact metrics.

It stands on top of the stages, as a user of them would: it trains with ``edgefusion.train`` and
samples with ``edgefusion.pipeline``, and no stage imports it. Importing this package plugs it
in (:mod:`edgefusion.toy.plugins`): ``toy:NAME`` model names, the ``toy`` evaluator, and its
captioner, prompt grammar, renderer and scorer for the data-curation stages.
"""

from edgefusion.toy import plugins  # noqa: F401  (registration is the import's effect)
