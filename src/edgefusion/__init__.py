"""edgefusion: the EdgeFusion / BK-SDM recipe as a toolkit.

Stages (each a function and an ``edgefusion <stage>`` command): compress (BK-SDM block removal),
toy (the embedded shapes world), and more as they land; see README.md.
"""

__version__ = "0.1.0"
