"""User-facing errors.

Anything a user can cause (a missing file, a bad option, a model of the wrong kind) is raised as
:class:`EdgefusionError` with one sentence naming the problem and the fix. The CLI prints that
sentence alone; ``--debug`` shows the traceback.
"""


class EdgefusionError(Exception):
    """An error caused by user input, with a message that says how to fix it."""
