"""A run's configuration: how a setting is declared (`settings`), the four
sections of a run (`sections`), the whole run and its files (`run`); the
names users import are here."""

from engine.config.run import (  # noqa: F401
    CROSS_CHECKS, SECTIONS, RunConfig, all_settings, flag_name, from_settings)
from engine.config.settings import ConfigError  # noqa: F401
from engine.config.sections import (  # noqa: F401
    BINARIZE_MODES, LEARNED_SCALE_LOSSES, LR_SCHEDULES, NAN_POLICIES,
    OBJECTIVES, OPTIMIZERS, PRECISION_POLICIES, RECONSTRUCTION_LOSSES,
    STRATEGIES, DataConfig, DistributionConfig, ModelConfig, TrainConfig)
