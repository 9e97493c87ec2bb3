"""What the verbs change in the process while they run, and only then: the library warnings they silence,
torch's thread count (``training.num_threads``) and the Hugging Face libraries' offline mode (set when the Hub
cannot be reached). Importing adalora_search changes no global state, and a verb leaves the process as it found
it: a notebook or a server that calls the API keeps its own warning filters, threads and network settings.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Within: Optuna's ExperimentalWarning (heartbeats, retry callbacks, some pruners are "experimental" in
    Optuna's terms, and we rely on them), its note that a fixed parameter lies outside the searched range (a
    baseline may, on purpose: e.g. PEFT's default learning rate), and transformers' FutureWarnings.
    """
    import optuna

    with warnings.catch_warnings(), process_state_restored():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        yield


@contextlib.contextmanager
def process_state_restored() -> Iterator[None]:
    """Put back torch's thread count and the Hugging Face offline switches (``HF_HUB_OFFLINE`` in the environment, in
    huggingface_hub's constants and in datasets' config) as they were found (Optuna's
    ``limit_threads_in_optimization`` is the model); torch imported by the verb itself gets back the thread count
    it had when the engine imported it (``train.engine.THREADS_AT_IMPORT``).
    """
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    env = os.environ.get("HF_HUB_OFFLINE")
    hub = sys.modules.get("huggingface_hub.constants")
    hub_offline = getattr(hub, "HF_HUB_OFFLINE", None)
    data = sys.modules.get("datasets.config")
    data_offline = getattr(data, "HF_HUB_OFFLINE", None)
    try:
        yield
    finally:
        if threads is None and (engine := sys.modules.get("adalora_search.train.engine")) is not None:
            torch, threads = sys.modules["torch"], engine.THREADS_AT_IMPORT
        if torch is not None and threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env
        offline = env is not None and env.strip().lower() in ("1", "true", "yes", "on")  # as found, for late imports
        if (now := sys.modules.get("huggingface_hub.constants")) is not None:
            now.HF_HUB_OFFLINE = hub_offline if hub is not None else offline
        if (now := sys.modules.get("datasets.config")) is not None:
            now.HF_HUB_OFFLINE = data_offline if data is not None else offline
        if (assets := sys.modules.get("adalora_search.train.assets")) is not None:
            assets.offline_unless_reachable.cache_clear()  # the next verb asks the network again
