"""The model's generation-config logits processors, applied row by row in each row's context.

Greedy lookahead decoding is exact only if every committed token is the argmax of the *same*
scores plain ``generate()`` would compute. Processors such as ``repetition_penalty`` depend on
the tokens before the predicted one; in a step those differ per row (the root's context is the
committed text, a draft row's context is the committed text plus the draft tokens up to it), so
each row gets its own context. Processors whose exact behaviour we cannot reproduce this way
are refused with an error naming the setting, never ignored.
"""

from __future__ import annotations

import numbers

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    InfNanRemoveLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

def eos_token_ids(generation_config, eos_token_id=None) -> list[int]:
    """The stop tokens of a run, one rule for the engine, the HF entry point and every command:
    ``eos_token_id`` if given (an int, a list or a tensor), else the generation config's (the
    project's loader fills that from the tokenizer when a model has none); [] for none."""
    if eos_token_id is None:
        eos_token_id = getattr(generation_config, "eos_token_id", None)
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, str):
        raise ValueError(f"eos_token_id must be a token id, not the token {eos_token_id!r}; resolve it with the "
                         f"tokenizer: tokenizer.convert_tokens_to_ids({eos_token_id!r})")
    if isinstance(eos_token_id, torch.Tensor) and not (eos_token_id.is_floating_point() or eos_token_id.dtype == torch.bool):
        eos_token_id = eos_token_id.flatten().tolist()
    values = list(eos_token_id) if isinstance(eos_token_id, (list, tuple, set)) else [eos_token_id]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in values):
        raise ValueError(f"eos_token_id must be a token id (an int >= 0), a list of them or an integer tensor, "
                         f"got {eos_token_id!r}")
    return [int(v) for v in values]


# settings with no exact per-row equivalent here: (field, value meaning "off")
UNSUPPORTED = {
    "guidance_scale": (None, 1, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "watermarking_config": (None,),
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "penalty_alpha": (None,),
    "dola_layers": (None,),
    "num_assistant_tokens": None,  # irrelevant: candidate settings of assisted decoding
}


def check_supported(generation_config: GenerationConfig) -> None:
    for field, off in UNSUPPORTED.items():
        if off is None:
            continue
        value = getattr(generation_config, field, None)
        if value not in off:
            raise NotImplementedError(
                f"generation_config.{field}={value!r} is not supported by lookahead decoding; "
                f"set it to {off[0]!r} (e.g. model.generation_config.{field} = {off[0]!r})"
            )


def build_processors(
    generation_config: GenerationConfig, prompt_length: int, eos_ids: list[int]
) -> LogitsProcessorList:
    """The greedy-relevant processors plain generate() would build, in generate()'s order."""
    check_supported(generation_config)
    cfg = generation_config
    eos = torch.tensor(eos_ids, dtype=torch.long) if eos_ids else None
    procs = LogitsProcessorList()
    if cfg.sequence_bias is not None:
        procs.append(SequenceBiasLogitsProcessor(sequence_bias=cfg.sequence_bias))
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
    if cfg.no_repeat_ngram_size is not None and cfg.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(cfg.no_repeat_ngram_size))
    if cfg.bad_words_ids is not None:
        procs.append(NoBadWordsLogitsProcessor(cfg.bad_words_ids, eos))
    if cfg.min_length is not None and cfg.min_length > 0 and eos is not None:
        procs.append(MinLengthLogitsProcessor(cfg.min_length, eos))
    if cfg.min_new_tokens is not None and cfg.min_new_tokens > 0 and eos is not None:
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_length, cfg.min_new_tokens, eos))
    if cfg.remove_invalid_values is True:
        procs.append(InfNanRemoveLogitsProcessor())
    if cfg.suppress_tokens is not None:
        procs.append(SuppressTokensLogitsProcessor(cfg.suppress_tokens))
    if cfg.begin_suppress_tokens is not None:
        procs.append(SuppressTokensAtBeginLogitsProcessor(cfg.begin_suppress_tokens, prompt_length))
    return procs


def score_rows(
    processors: LogitsProcessorList,
    context: torch.Tensor,  # [T] committed tokens, the root last
    paths: list[list[int]],  # [R] tokens after the root in row r's context
    logits: torch.Tensor,  # [R, V]
) -> torch.Tensor:  # [R, V]
    """Apply ``processors`` to each row with its own context; the identity when there are none."""
    if len(processors) == 0:
        return logits
    rows = []
    for r, path in enumerate(paths):
        ids = torch.cat([context, torch.tensor(path, dtype=torch.long, device=context.device)])[None]  # [1, T + d]
        rows.append(processors(ids, logits[r : r + 1].clone())[0])
    return torch.stack(rows)
