"""The errors a user can fix. Each is reported as one line that names the problem and the way
out, before any work where possible, never as a traceback (`USER_ERRORS`)."""


class ConfigError(ValueError):
    """A config value that cannot be trained with."""


class DataError(RuntimeError):
    """A data file is missing, could not be fetched, or is not the pinned file."""


class LossFileError(ValueError):
    """A loss file does not follow the published format."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: cut short, not a checkpoint, or from another format."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


USER_ERRORS = (ConfigError, DataError, LossFileError, CheckpointError, TrainingDiverged)
