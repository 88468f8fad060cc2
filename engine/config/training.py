"""The training section of a run's configuration (`TrainConfig`): the outer
loop, the optimizer and its schedule, the guards, where files go. Declared
as `engine.config.sections` declares the others."""

from __future__ import annotations

import dataclasses
from typing import Optional

from engine.config import settings
from engine.config.settings import setting

PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential", "piecewise", "iwae")
NAN_POLICIES = ("stop", "skip", "recover")
KEEP_BEST = ("none", "elbo", "nll")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The outer loop: how long, how often, where to write."""

  model_dir: Optional[str] = setting(
      None, "Where the run writes its checkpoints, TensorBoard logs, "
      "figures and config, and resumes from; default: runs/<model>_<data> "
      "in the current directory. <data> is --data_dir's folder name, else "
      "--dataset; a -<digest> of the settings a run must keep to resume "
      "is added where they differ from --model's defaults (a preset, "
      "another latent size), so the same command resumes and another "
      "setup gets its own directory. Needed for a multi-worker job. Any "
      "TensorFlow filesystem (gs://, hdfs://, ram://).",
      check=settings.NOT_EMPTY, resume_safe=True)
  batch_size: int = setting(128, "Global batch size (summed over replicas).",
                            check=settings.POSITIVE)
  epochs: int = setting(10, "Passes over the training set (ignored when "
                        "--train_steps is set).", check=settings.POSITIVE,
                        resume_safe=True)
  train_steps: Optional[int] = setting(
      None, "Total optimizer steps of the run (overrides --epochs).",
      check=settings.POSITIVE, resume_safe=True)
  steps_per_loop: int = setting(100, "Training steps run inside one "
                                "compiled call.", check=settings.POSITIVE,
                                resume_safe=True)
  learning_rate: float = setting(1e-3, "The optimizer's learning rate.",
                                 check=settings.POSITIVE, resume_safe=True)
  lr_schedule: str = setting(
      "constant", "After --warmup_steps: constant; cosine (to "
      "--lr_min_fraction of the rate at the last step); exponential (times "
      "--lr_decay_rate every --lr_decay_steps); piecewise (times "
      "--lr_decay_rate at each of --lr_boundaries); or iwae: Burda et al.'s "
      "3^i passes at --learning_rate * 10^(-i/7) for i = 0..7 (3,280 "
      "passes; piecewise at those boundaries), with their Adam epsilon "
      "1e-4.", choices=LR_SCHEDULES, resume_safe=True)
  warmup_steps: int = setting(
      0, "Raise the learning rate linearly from 0 over the first N steps "
      "(step s trains at (s + 1) / N of it), then follow --lr_schedule.",
      check=settings.NON_NEGATIVE, resume_safe=True)
  lr_min_fraction: float = setting(
      0.0, "With --lr_schedule=cosine: the final rate, as a fraction of "
      "--learning_rate.", check=settings.UNIT_INTERVAL, resume_safe=True)
  lr_decay_rate: float = setting(
      0.5, "With exponential or piecewise: the factor the rate is "
      "multiplied by (every --lr_decay_steps, or at each boundary).",
      check=(lambda v: 0 < v <= 1, "must be in (0, 1]"), resume_safe=True)
  lr_decay_steps: Optional[int] = setting(
      None, "With --lr_schedule=exponential: steps per --lr_decay_rate "
      "(default: one epoch).", check=settings.POSITIVE, resume_safe=True)
  lr_boundaries: Optional[tuple[int, ...]] = setting(
      None, "With --lr_schedule=piecewise: S1,S2,...: the steps (after "
      "warm-up) at which the rate is multiplied by --lr_decay_rate.",
      parse=settings.int_list,
      check=(lambda v: v is None or (all(b > 0 for b in v) and list(v) ==
                                     sorted(set(v))),
             "must be increasing positive steps S1,S2,..."), resume_safe=True)
  ema_decay: float = setting(
      0.0, "Keep an exponential moving average of the weights with this "
      "decay (e.g. 0.999), updated after every applied step on the device; "
      "evaluation, the NLL, figures, sample scores and the export use it, "
      "and the raw weights' test ELBO is logged as elbo_raw (0: off).",
      check=(lambda v: 0 <= v < 1, "must be in [0, 1)"), resume_safe=True)
  ema_dynamic_decay: bool = setting(
      True, "With --ema_decay: use min(decay, (1 + t) / (10 + t)) at step t, "
      "as Model Garden does, so the average forgets the initial weights "
      "(off: a fixed decay from step 0, whose average still holds "
      "decay^t of them).", resume_safe=True)
  optimizer: str = setting(
      "adam", "adam; adamw (Adam with decoupled --weight_decay); or sgd "
      "(plain gradient descent).", choices=OPTIMIZERS)
  weight_decay: float = setting(
      0.0, "With --optimizer=adamw: the decoupled weight decay.",
      check=settings.NON_NEGATIVE)
  adam_beta_1: float = setting(0.9, "Adam's (and AdamW's) beta_1.",
                               check=(lambda v: 0 <= v < 1,
                                      "must be in [0, 1)"))
  adam_beta_2: float = setting(0.999, "Adam's (and AdamW's) beta_2.",
                               check=(lambda v: 0 <= v < 1,
                                      "must be in [0, 1)"))
  seed: int = setting(0, "Seeds weights, data order, binarization, noise "
                      "and sampling; a run is reproducible for a given seed.")
  eval_every: int = setting(0, "Evaluate the test ELBO every N steps (0: "
                            "only at the end).", check=settings.NON_NEGATIVE,
                            resume_safe=True)
  checkpoint_every: int = setting(
      1000, "Save a checkpoint every N steps (and always at the end; 0: "
      "only at the end).", check=settings.NON_NEGATIVE, resume_safe=True)
  log_every: int = setting(100, "Print progress and write summaries every N "
                           "steps.", check=settings.POSITIVE, resume_safe=True)
  keep_checkpoints: int = setting(3, "Number of checkpoints to keep.",
                                  check=settings.POSITIVE, resume_safe=True)
  keep_best: str = setting(
      "none", "elbo or nll: also keep the checkpoint of the best test ELBO "
      "(or NLL, with --eval_nll_samples) seen at any evaluation, in "
      "<model_dir>/best/ with best.json (its step and value), and with "
      "--export_dir export it as <export_dir>/best/<step>/; none: off.",
      choices=KEEP_BEST, resume_safe=True)
  export_dir: Optional[str] = setting(
      None, "Write a SavedModel here at the end of training (versioned: "
      "<export_dir>/<step>/; any TensorFlow filesystem).", resume_safe=True)
  init_from: Optional[str] = setting(
      None, "Start a new run from another run's weights (fine-tuning): its "
      "run directory (its latest checkpoint) or a checkpoint path. The "
      "model must have the same architecture; the optimizer, step and "
      "schedule start afresh. Used only when --model_dir holds no "
      "checkpoint yet (a resumed run continues from its own).",
      absolute_path=True, resume_safe=True)
  mixed_precision: str = setting(
      "float32", "Compute dtype policy: float32, mixed_bfloat16, "
      "mixed_float16 (loss-scaled; GPUs), or auto (measured at start-up). "
      "auto: each policy this "
      "hardware has units for is measured for a few hundred steps of this "
      "model at start-up, and one is taken only where it is at least 5% "
      "faster than float32 (the choice is kept in <model_dir>/autotune.json "
      "and config.json, so a resumed run keeps it; the start line gives the "
      "measured ratio). Loss, KL and logits stay float32.",
      choices=PRECISION_POLICIES, resume_safe=True)
  jit_compile: Optional[bool] = setting(
      None, "Compile training with XLA; default: auto, which is on except "
      "for models with convolutions on a CPU (whose XLA gradients are "
      "slower there than oneDNN's; vae-engine benchmark measures both). On "
      "one device XLA compiles the whole step (many steps per XLA call "
      "unless the model has convolutions and runs on a CPU); under "
      "--strategy the forward and backward pass. The start line says "
      "which. The importance-sampled NLL "
      "(--eval_nll_samples, vae-engine evaluate) is compiled likewise.",
      resume_safe=True)
  figures: bool = setting(True, "Write matplotlib figures into "
                          "<model_dir>/figures at the end of training.",
                          resume_safe=True)
  eval_nll_samples: int = setting(
      0, "Also estimate the test negative log-likelihood at every evaluation "
      "with this many importance samples per image (5000 in the IWAE paper; "
      "0: off).", check=settings.NON_NEGATIVE, resume_safe=True)
  sample_quality: bool = setting(
      False, "At the final evaluation (and in vae-engine evaluate), score "
      "10,000 prior samples with a classifier trained on the training "
      "split's labels (cached in <model_dir>/classifier): the entropy of "
      "their predicted classes and their Fréchet distance to the test set "
      "in the classifier's feature space (not FID: no Inception weights); "
      "for --conditional models, the fraction classified as their label.",
      resume_safe=True)
  nan_policy: str = setting(
      "stop", "On a non-finite loss: stop (name the step and the term; the "
      "last good checkpoint stays); skip (drop that update; stop after "
      "--max_skipped_steps in a row); or recover (restore the last "
      "checkpoint, multiply the learning rate by --recover_lr_factor and go "
      "on; stop after --max_recoveries).", choices=NAN_POLICIES,
      resume_safe=True)
  recover_lr_factor: float = setting(
      0.5, "With --nan_policy=recover: what each recovery multiplies the "
      "learning rate by.", check=(lambda v: 0 < v <= 1, "must be in (0, 1]"),
      resume_safe=True)
  max_recoveries: int = setting(
      3, "With --nan_policy=recover: recoveries after which a non-finite "
      "step stops the run (exit 3).", check=settings.POSITIVE,
      resume_safe=True)
  max_skipped_steps: int = setting(
      10, "Consecutive skipped steps that stop the run (with "
      "--nan_policy=skip, or updates over --skip_grad_norm).",
      check=settings.POSITIVE, resume_safe=True)
  clip_grad_norm: Optional[float] = setting(
      None, "Scale each update's gradient down to this global norm (summed "
      "over replicas, before the optimizer).", check=settings.POSITIVE,
      resume_safe=True)
  skip_grad_norm: Optional[float] = setting(
      None, "Do not apply an update whose global gradient norm (before "
      "clipping) is larger; skips are counted, and --max_skipped_steps in "
      "a row stop the run.", check=settings.POSITIVE, resume_safe=True)
  allow_slow: bool = setting(
      False, "Run settings that are known to be very slow on this machine "
      "(mixed_float16 without a GPU) instead of refusing them.",
      resume_safe=True)
  profile_steps: Optional[tuple[int, int]] = setting(
      None, "FIRST,LAST: capture a TensorBoard profiler trace of training "
      "steps [FIRST, LAST) into <model_dir>/plugins/profile (summarize it "
      "with vae-engine profile_summary).", parse=settings.int_tuple,
      check=(lambda v: v is None or 0 <= v[0] < v[1],
             "must be FIRST,LAST with 0 <= FIRST < LAST"), resume_safe=True)

  def __post_init__(self):
    settings.check_section(self, "train")  # (A JSON list becomes a tuple.)
