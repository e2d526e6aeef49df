"""Lookahead decoding engine core.

    from framework import LookaheadConfig, LookaheadEngine
    engine = LookaheadEngine(model, LookaheadConfig(window=5, ngram=4, guess_set=5))
    out = engine.generate(input_ids, max_new_tokens=128)
    out.sequences, out.stats.steps, out.stats.emitted_per_step
"""

from framework.config import LookaheadConfig
from framework.engine import LookaheadEngine
from framework.hf import lookahead_generate
from framework.output import DecodeStats, LookaheadOutput

__all__ = ["DecodeStats", "LookaheadConfig", "LookaheadEngine", "LookaheadOutput", "lookahead_generate"]
