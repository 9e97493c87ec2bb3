"""Local worker processes: one per slot (a GPU id, or the CPU), each running ``adalora-search worker``.

Workers share the study through its storage exactly as workers on other machines do (runner.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from adalora_search.errors import UserError
from adalora_search.search.runner import Budget


def worker_slots(workers: int, gpus: list[str], workers_per_gpu: int = 1, gpus_per_trial: int = 1) -> list[str | None]:
    """The devices of each local worker: GPU ids (``CUDA_VISIBLE_DEVICES``, comma-joined) or None for the CPU.

    ``workers_per_gpu`` workers share each GPU of ``gpus`` (default: every visible CUDA device);
    on a machine without one they share the CPU. A small model leaves most of a large GPU idle,
    so several trials at once raise its utilisation. ``gpus_per_trial`` GPUs form one worker's slot,
    each trial of it running on them as that many processes (train/distributed.py); on a machine
    without a GPU those processes share the CPU (gloo).

    Raises:
        UserError: ``--workers`` and ``--workers-per-gpu`` are both above 1; ``--gpus-per-trial`` with
            ``--workers-per-gpu``, above the GPUs visible, or not dividing them.
    """
    if gpus_per_trial > 1:
        return _trial_slots(workers, gpus, workers_per_gpu, gpus_per_trial)
    if workers_per_gpu > 1 and workers > 1:
        raise UserError(
            f"--workers = {workers} and --workers-per-gpu = {workers_per_gpu}: choose one "
            "(--workers for CPU workers, --workers-per-gpu with or without --gpus)"
        )
    if workers_per_gpu > 1 and not gpus:
        gpus = visible_gpus()
    if gpus:
        return [gpu for gpu in gpus for _ in range(workers_per_gpu)]
    return [None] * max(workers, workers_per_gpu)


def _trial_slots(workers: int, gpus: list[str], workers_per_gpu: int, per_trial: int) -> list[str | None]:
    if workers_per_gpu > 1:
        raise UserError(
            f"--gpus-per-trial = {per_trial} and --workers-per-gpu = {workers_per_gpu}: a trial on several "
            "GPUs does not share them; drop --workers-per-gpu"
        )
    gpus = gpus or visible_gpus()
    if not gpus:  # no GPU: each trial's processes share the CPU (gloo)
        return [None] * workers
    if per_trial > len(gpus) or len(gpus) % per_trial:
        raise UserError(
            f"--gpus-per-trial = {per_trial}: {len(gpus)} GPUs are visible ({','.join(gpus)}), which "
            f"{'is fewer' if per_trial > len(gpus) else 'does not split into groups of that size'}; "
            "give a number that divides them, or name the GPUs with --gpus"
        )
    return [",".join(gpus[i : i + per_trial]) for i in range(0, len(gpus), per_trial)]


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand to its workers: its own ``CUDA_VISIBLE_DEVICES`` (e.g. the GPUs a
    cluster allocated), else every CUDA device.
    """
    import torch

    count = torch.cuda.device_count()
    inherited = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return inherited[:count] if inherited else [str(i) for i in range(count)]


def spawn_workers(
    study_file: str,
    url: str,
    budget: Budget,
    slots: list[str | None],
    allow_changed: bool = False,
    gpus_per_trial: int = 1,
) -> int:
    """Start one worker process per slot (see ``worker_slots``); returns the worst exit code."""
    threads = max(1, (os.cpu_count() or 1) // (len(slots) * gpus_per_trial))
    procs = []
    for gpu in slots:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), ADALORA_SEARCH_THREADS=str(threads))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        env["ADALORA_SEARCH_STORAGE"] = url  # read by --storage: a password stays out of the process list
        cmd = [sys.executable, "-m", "adalora_search", "worker", study_file]
        cmd += ["--n-trials", str(budget.n_trials)] if budget.n_trials else []
        cmd += ["--timeout", str(budget.timeout)] if budget.timeout else []
        cmd += ["--allow-changed-study"] if allow_changed else []
        cmd += ["--gpus-per-trial", str(gpus_per_trial)] if gpus_per_trial > 1 else []
        procs.append(subprocess.Popen(cmd, env=env))
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
