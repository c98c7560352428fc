"""Every error a user can cause, one class each, so the CLI can print one line and exit non-zero."""


class DfqvitError(Exception):
    """Base class: the CLI prints `dfqvit: error: <message>` and exits with status 2."""


class UnknownModelError(DfqvitError):
    pass


class CheckpointError(DfqvitError):
    """Missing, unreadable or mismatching weights file."""


class BitsError(DfqvitError, ValueError):
    pass


class DataError(DfqvitError):
    """Empty folder, unreadable image, or classes that do not fit the model's head."""


class SynthesisDivergedError(DfqvitError):
    """A loss term became NaN or Inf; the last good checkpoint is kept."""


class ConfigError(DfqvitError, ValueError):
    """An option that makes no sense (unknown method, schedule, observer...)."""


class OutputError(DfqvitError):
    """An output location dfqvit must not write: a user's folder, the working folder, a file, no permission."""
