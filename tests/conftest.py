import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# cost curves calibrated by engines under test go to a throw-away folder, not the user's cache
os.environ.setdefault("LOOKAHEAD_CACHE", tempfile.mkdtemp(prefix="lookahead-test-cache-"))
# the default (adaptive) scheduler prices steps by a timed cost curve; a flat one (every node fed,
# as the static scheduler does) keeps tests independent of the machine's speed. tests/framework/
# test_costs.py exercises calibration itself.
os.environ.setdefault("LOOKAHEAD_COST_MODEL", "flat")

settings.register_profile(
    "ci", max_examples=40, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=400, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# tiny models run faster on one thread, and results don't depend on the thread count we test at
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _wandb_disabled(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
