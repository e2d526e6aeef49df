"""The engine inside Hugging Face ``generate``::

    model.generate(input_ids, custom_generate=lookahead_generate, window=5, ngram=4, guess_set=5,
                   do_sample=False, max_new_tokens=128)

generate() validates the generation config, builds its logits processors and stopping criteria,
then calls this function. Extra arguments reach it only because they are named parameters here.

Limit: generate() does not hand a streamer to a custom_generate callable, so this path cannot
stream; use ``LookaheadEngine.generate(..., streamer=...)`` for streaming.
"""

from __future__ import annotations

from typing import Any

import torch

from framework.config import LookaheadConfig
from framework.engine import LookaheadEngine
from framework.processors import check_supported


def lookahead_generate(
    model,
    input_ids: torch.Tensor,
    logits_processor=None,
    stopping_criteria=None,
    generation_config=None,
    synced_gpus: bool = False,
    streamer=None,
    window: int | None = None,
    ngram: int | None = None,
    guess_set: int | None = None,
    pool: dict[str, Any] | str | None = None,
    scheduler: dict[str, Any] | str | None = None,
    verifier: dict[str, Any] | str | None = None,
    lookahead_config: LookaheadConfig | dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    **model_kwargs,
):
    """``custom_generate`` entry point; returns what ``generate`` would (ids, or a dict output)."""
    config = _merge_config(lookahead_config, window, ngram, guess_set, pool, scheduler, verifier)
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(
            "attention_mask has padding: the lookahead engine takes one unpadded prompt. If the prompt "
            "merely contains the pad token id (SmolLM2's pad is its EOS), pass "
            "attention_mask=torch.ones_like(input_ids)"
        )
    for field in ("stop_strings", "max_time"):
        if getattr(generation_config, field, None) is not None:
            raise NotImplementedError(f"generation_config.{field} is not supported by lookahead_generate")
    check_supported(generation_config)
    _check_processors(logits_processor, generation_config, input_ids.shape[1])
    max_new_tokens = generation_config.max_length - input_ids.shape[1]
    engine = LookaheadEngine(model, config)
    out = engine.generate(
        input_ids,
        max_new_tokens=max(max_new_tokens, 0),
        eos_token_id=generation_config.eos_token_id,
        do_sample=generation_config.do_sample,
        temperature=generation_config.temperature,
        top_k=generation_config.top_k,
        top_p=generation_config.top_p,
        min_p=generation_config.min_p,
        generator=generator,
    )
    if generation_config.return_dict_in_generate:
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        return GenerateDecoderOnlyOutput(sequences=out.sequences)
    return out.sequences


def _check_processors(logits_processor, generation_config, prompt_length: int) -> None:
    """Refuse processors the engine would not rebuild itself (e.g. a user's ``logits_processor=``)."""
    from framework.processors import build_processors, eos_token_ids
    from framework.sampling import resolve_sampling

    eos = eos_token_ids(generation_config)
    settings = resolve_sampling(
        generation_config, generation_config.do_sample, generation_config.temperature,
        generation_config.top_k, generation_config.top_p, generation_config.min_p,
    )
    ours = [type(p) for p in build_processors(generation_config, prompt_length, eos) + settings.warpers()]
    given = [type(p) for p in (logits_processor or [])]
    extra = [cls.__name__ for cls in given if cls not in ours]
    if extra or len(given) > len(ours):
        raise NotImplementedError(
            f"lookahead_generate cannot honour these logits processors exactly: {extra or given}; "
            f"drop them (or use plain generate)"
        )


def _merge_config(base, window, ngram, guess_set, pool, scheduler, verifier) -> LookaheadConfig:
    if isinstance(base, LookaheadConfig):
        fields = base.model_dump()
    else:
        fields = dict(base or {})
    overrides = {"window": window, "ngram": ngram, "guess_set": guess_set, "pool": pool,
                 "scheduler": scheduler, "verifier": verifier}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return LookaheadConfig.model_validate(fields)
