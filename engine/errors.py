"""Errors the engine reports to users as one line, without a traceback."""


class UserError(Exception):
  """Bad input from the user: a flag, a file or a directory.

  The message must name the culprit (flag, file or directory) and say what is
  wrong with it; `engine.main` prints it as a single line and exits non-zero.
  """


class DataError(UserError):
  """A dataset file or source that cannot be read or is malformed."""


class CheckpointMismatchError(UserError):
  """A `--model_dir` whose checkpoint belongs to another model or architecture."""


class TrainingDiverged(Exception):
  """The loss or its gradients became non-finite and `--nan_policy` says stop.

  The message names the step and the term; the last good checkpoint is kept.
  """
