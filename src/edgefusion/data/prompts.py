"""Prompt generators for ``synthesize``: balanced templates and LLM rewriting.

The paper controls the attributes of its synthetic prompts (gender, ethnicity, age) so that no
value dominates. Here every attribute draws from a :class:`Deck`: each value once, in a shuffled
order, before any value repeats, so counts differ by at most one per round. An LLM (a local
transformers model or an OpenAI-compatible endpoint) may then rewrite each template prompt into
a richer one, as the paper uses GPT-4. A world registers its own prompt grammar as a prompt
source (:data:`edgefusion.data.registry.PROMPT_SOURCES`; the toy world's draws its scenes from
decks too).
"""

from __future__ import annotations

import json
import os
import random
import string
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from edgefusion.errors import EdgefusionError


class Deck:
    """Draw values without replacement, reshuffling when empty: balanced counts, random order."""

    def __init__(self, values: Sequence[Any], rng: random.Random) -> None:
        if not values:
            raise EdgefusionError("a prompt slot needs at least one value")
        self.values, self.rng, self.cards = list(values), rng, []

    def draw(self, allowed: Callable[[Any], bool] = lambda _: True) -> Any:
        """The next card that ``allowed`` accepts (cards skipped stay in the deck for later draws)."""
        for _ in range(2):
            for i, card in enumerate(self.cards):
                if allowed(card):
                    return self.cards.pop(i)
            self.cards += self.rng.sample(self.values, len(self.values))
        raise EdgefusionError("no value of a prompt slot satisfies its constraints")


def template_prompts(
    templates: Sequence[str], slots: dict[str, Sequence[str]], n: int, seed: int
) -> list[str]:
    """``n`` prompts from ``templates`` (``"a photo of a {age} {person}"``) with balanced slot values."""
    rng = random.Random(f"edgefusion.data/template-prompts/{seed}")
    needed = {f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f}
    missing = sorted(needed - set(slots))
    if missing:
        raise EdgefusionError(f"template slot(s) {', '.join(missing)} have no values: add them under 'slots'")
    template_deck = Deck(templates, rng)
    slot_decks = {name: Deck(values, rng) for name, values in slots.items()}
    return [template_deck.draw().format_map(_Drawing(slot_decks)) for _ in range(n)]


class _Drawing(dict):
    """A format mapping that draws each slot from its deck when the template asks for it."""

    def __init__(self, decks: dict[str, Deck]) -> None:
        super().__init__()
        self.decks = decks

    def __missing__(self, key: str) -> str:
        return str(self.decks[key].draw())


def rewrite_with_endpoint(
    prompts: list[str], endpoint: str, model: str, instruction: str, api_key_env: str = "OPENAI_API_KEY"
) -> list[str]:
    """Rewrite each prompt with an OpenAI-compatible chat completions endpoint (temperature 0).

    The API key, if the server needs one, is read from the environment variable ``api_key_env``
    at call time, so it never lands in a config or ``stats.json``.
    """
    url = endpoint.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    rewritten = []
    for prompt in prompts:
        body = {
            "model": model,
            "temperature": 0,
            "messages": [{"role": "user", "content": instruction.format(prompt=prompt)}],
        }
        request = urllib.request.Request(url, json.dumps(body).encode("utf-8"), headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read().decode("utf-8"))
            rewritten.append(answer["choices"][0]["message"]["content"].strip())
        except (urllib.error.URLError, OSError, KeyError, IndexError, json.JSONDecodeError) as err:
            raise EdgefusionError(
                f"LLM endpoint {url} failed ({err}): check the URL and the server"
            ) from None
    return rewritten


@lru_cache(maxsize=2)
def _local_llm(path: str):
    from transformers import pipeline

    try:
        return pipeline("text-generation", model=path, device="cpu")
    except (OSError, ValueError) as err:
        raise EdgefusionError(f"cannot load text-generation model {path}: {err}") from None


def rewrite_with_local_llm(
    prompts: list[str], path: str, instruction: str, max_new_tokens: int = 60
) -> list[str]:
    """Rewrite each prompt with a local transformers causal LM (greedy, so runs are repeatable)."""
    generator = _local_llm(path)
    rewritten = []
    for prompt in prompts:
        request = instruction.format(prompt=prompt)
        out = generator(request, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
        text = out[0]["generated_text"].strip()
        rewritten.append(text.splitlines()[0] if text else prompt)  # an empty answer keeps the prompt
    return rewritten
