"""Sampling settings and warpers, resolved and built exactly as Hugging Face ``generate()`` does.

Glossary:
    warper      a logits processor that only applies when sampling (temperature, top-k, top-p,
                min-p); HF appends them after the other processors, in a fixed order.
    settings    the resolved ``do_sample``/``temperature``/``top_k``/``top_p``/``min_p``: an
                explicit argument wins, else the model's ``generation_config``, else HF's global
                default (``top_k=50``, ``temperature=1.0``, ``top_p=1.0``, ``do_sample=False``).

Example::

    settings = resolve_sampling(model.generation_config, do_sample=True, temperature=0.7)
    settings.warpers()   # [TemperatureLogitsWarper(0.7), TopKLogitsWarper(50)]: HF's list

``None`` means "not given", like omitting the keyword in ``model.generate``; to switch a warper
off pass its neutral value (``temperature=1.0``, ``top_k=0``, ``top_p=1.0``).

Checked against transformers 5.24 ``GenerationMixin._get_logits_processor`` (order and
conditions) and ``_prepare_generation_config`` (precedence): tests/strategies/
test_verifier_sampling.py compares with the list ``generate()`` itself builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

FIELDS = ("do_sample", "temperature", "top_k", "top_p", "min_p")

# HF's global defaults for FIELDS (GenerationConfig._get_default_generation_params in 5.24),
# used only if that private helper is missing in another version
_FALLBACK_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None}

# warpers HF would also apply that we do not build: (field, test that it is active)
_UNSUPPORTED_WARPERS = {
    "top_h": lambda v: v is not None,
    "typical_p": lambda v: v is not None and v < 1.0,
    "epsilon_cutoff": lambda v: v is not None and 0.0 < v < 1.0,
    "eta_cutoff": lambda v: v is not None and 0.0 < v < 1.0,
}
_NEUTRAL = {"top_h": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


@dataclass(frozen=True)
class SamplingSettings:
    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None

    def warpers(self, min_tokens_to_keep: int = 1) -> LogitsProcessorList:
        """HF's warper list for these settings; empty for greedy decoding."""
        if not self.do_sample:
            return LogitsProcessorList()
        return build_warpers(
            self.temperature, self.top_k, self.top_p, self.min_p, min_tokens_to_keep=min_tokens_to_keep
        )


def build_warpers(
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    *,
    min_tokens_to_keep: int = 1,  # HF: 1 unless beam search (not supported here)
) -> LogitsProcessorList:
    """HF's own warpers, in ``_get_logits_processor``'s order and under its conditions."""
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=min_tokens_to_keep))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=min_tokens_to_keep))
    if min_p is not None:  # HF adds it even at 0.0 (a no-op); min-p comes after top-p
        warpers.append(MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=min_tokens_to_keep))
    return warpers


def _global_defaults() -> dict:
    helper = getattr(GenerationConfig, "_get_default_generation_params", None)
    defaults = helper() if helper is not None else {}
    return {field: defaults.get(field, _FALLBACK_DEFAULTS[field]) for field in FIELDS}


def resolve_sampling(
    generation_config: GenerationConfig | None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> SamplingSettings:
    """Explicit value, else ``generation_config``'s, else HF's global default, field by field.

    Raises if sampling and the config asks for a warper this module does not build
    (``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``): ignoring it would sample
    from a different law than ``generate()``.
    """
    given = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    defaults = _global_defaults()
    resolved = {}
    for field in FIELDS:
        value = given[field]
        if value is None and generation_config is not None:
            value = getattr(generation_config, field, None)
        resolved[field] = defaults[field] if value is None else value
    settings = SamplingSettings(**resolved)
    if settings.do_sample and generation_config is not None:
        for field, active in _UNSUPPORTED_WARPERS.items():
            value = getattr(generation_config, field, None)
            if active(value):
                raise NotImplementedError(
                    f"generation_config.{field}={value!r} is not supported with do_sample=True; "
                    f"set model.generation_config.{field} = {_NEUTRAL[field]!r}"
                )
    return settings
