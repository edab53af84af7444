"""``edgefusion recipe``: the whole EdgeFusion recipe from one YAML file.

One file names the models, the data and every stage's settings; stages run in order, in
process, each feeding the next by reference (``${distill.out}``). A state file in the output
folder remembers each stage's fingerprint, so a re-run skips finished stages, resumes an
interrupted one and redoes exactly the stages whose settings or inputs changed
(:mod:`~edgefusion.recipe.plan`). ``recipe report`` turns a run folder into one HTML page.

Importing the package registers the built-in stage kinds (:mod:`~edgefusion.recipe.stages`);
other packages add theirs with :func:`~edgefusion.recipe.kinds.register_stage_kind`.
"""

from edgefusion.recipe.stages import register_builtin_kinds

register_builtin_kinds()
