"""Command-line experiments on top of the engine.

    python -m experiments.generate --prompt "..." [--compare]   # one prompt, streamed, with stats
"""
