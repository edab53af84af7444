"""The shipped prompt sets: reproducible from their generator, parseable, and disjoint."""

from edgefusion.toy.captions import parse
from edgefusion.toy.prompts import load_prompts, make_eval_prompts, make_val_prompts


def test_shipped_sets_are_what_their_generators_make():
    assert load_prompts("eval") == load_prompts() == make_eval_prompts()
    assert load_prompts("val") == make_val_prompts()


def test_validation_set_is_disjoint_from_the_eval_set_and_parses():
    val, evals = load_prompts("val"), set(load_prompts("eval"))
    assert len(val) == len(set(val)) == 200
    assert not evals & set(val)
    for prompt in val:
        assert parse(prompt) is not None, prompt
    assert sum(" of " in p or "above" in p or "below" in p for p in val) == 80
