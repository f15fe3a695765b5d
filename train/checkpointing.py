"""Checkpoints that are never half-written, each an HF folder with a model card.

The HF Trainer writes ``checkpoint-N`` in place, so a kill mid-save leaves a folder that
``get_last_checkpoint`` would pick up and fail to resume from. Here every checkpoint is written under
``<output_dir>/.staging/`` and renamed into place once every process has finished writing (``os.replace`` of
a directory is atomic on one filesystem). A stale staging folder from a killed run is simply overwritten.

Resuming (``train(resume_from_checkpoint="auto")``, also ``True``/``"last"``) picks the newest *complete*
checkpoint (one holding ``trainer_state.json``, which the Trainer writes last), so a folder left by an older
in-place save is skipped. A run resumed from a checkpoint at ``max_steps`` or beyond only loads those weights:
transformers 5.19 would otherwise train one step past ``max_steps`` on every such resume (found by
bench/kill_resume.py: each relaunch added a checkpoint-9, -10, ... and rotated ``checkpoint-<max_steps>`` away).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STAGING_DIR = ".staging"
RESUME_LAST = ("auto", "last", "true", "True")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(folder: str | os.PathLike) -> int | None:
    """The optimizer step a complete checkpoint folder was saved at; None when it is not one (no readable
    ``trainer_state.json``: killed mid-save, or not a checkpoint)."""
    try:
        return int(json.loads((Path(folder) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` under ``output_dir`` that is complete; incomplete ones are skipped."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if (m := _CHECKPOINT.match(p.name)) and p.is_dir()), reverse=True)
    return next((str(p) for _, p in found if checkpoint_step(p) is not None), None)


def resolve_resume(resume: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """``auto``/``last``/``True`` -> the newest complete checkpoint (None on a fresh run); a path stays as it is
    (a missing one is a one-line error); None/False/"" -> None."""
    if resume is True or str(resume) in RESUME_LAST:
        return last_complete_checkpoint(output_dir)
    if not resume:
        return None
    if checkpoint_step(resume) is None:
        raise FileNotFoundError(f"resume_from_checkpoint {resume}: not a complete checkpoint folder (no readable "
                                "trainer_state.json); pass auto to resume from the newest complete one")
    return str(resume)


def write_model_card(folder: str | os.PathLike, *, method: str, base_model: str | None, step: int,
                     settings: dict[str, Any] | None = None) -> Path:
    """A short README.md (HF model-card front matter + the settings that produced it)."""
    from twinloop.checkpoints.card import model_card
    from twinloop.checkpoints.card import write_model_card as write

    folder = Path(folder)
    summary = [f"Trained with twinloop ({method}) for {step} optimizer steps"
               + (f" from `{base_model}`." if base_model else ".")]
    return write(folder, model_card(title=folder.name, summary=summary, tags=["twinloop", method.lower()],
                                    base_model=base_model, settings=settings))


def publish(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished checkpoint folder into place atomically (replacing an older one of the same name)."""
    staged, final = Path(staged), Path(final)
    if final.exists():  # the same step saved again (e.g. a resumed run): the new one wins
        old = final.with_name(f"{STAGING_DIR}-old-{final.name}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


class AtomicCheckpointMixin:
    """Mix into an HF/TRL Trainer subclass (before the Trainer in the bases)."""

    _staging_save = False
    _card_method = "GPPO"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        # A process group that existed before this trainer (an in-process vLLM engine's, a caller's) is not the
        # trainer's to destroy at teardown: destroying it breaks that engine and every later one in the process.
        self.process_group_preexisted = dist.is_available() and dist.is_initialized()
        super().__init__(*args, **kwargs)

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging_save else run_dir

    def _card_settings(self) -> dict[str, Any]:
        keys = ("learning_rate", "num_generations", "temperature", "epsilon", "epsilon_high", "beta", "clip_mode",
                "gppo_beta1", "gppo_beta2", "dual_clip_c", "positive_loss_coeff", "filter_zero_std_groups", "seed")
        return {k: getattr(self.args, k) for k in keys if hasattr(self.args, k)}

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        step = checkpoint_step(resume) if resume else None
        if step is not None and 0 < self.args.max_steps <= step:  # already trained: take its weights, no step
            from transformers.trainer_utils import TrainOutput

            self._load_from_checkpoint(resume)
            self.state.global_step = step
            return TrainOutput(step, 0.0, {"resumed_finished_run": 1.0})
        return super().train(resume, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        run_dir = super()._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        staged = os.path.join(run_dir, STAGING_DIR, name)
        if self.args.should_save and os.path.exists(staged):
            shutil.rmtree(staged)  # left by a run killed mid-save
        self.accelerator.wait_for_everyone()
        self._staging_save = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_save = False
        self.accelerator.wait_for_everyone()  # every rank's shards are on disk before the rename
        if self.args.should_save:
            base = getattr(getattr(self.accelerator.unwrap_model(self.model), "config", None), "_name_or_path", None)
            write_model_card(staged, method=self._card_method, base_model=base, step=self.state.global_step,
                             settings=self._card_settings())
            publish(staged, os.path.join(run_dir, name))
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()
