"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class HiddenCostError(Exception):
    """Bad user input or an unusable asset, explained in one actionable sentence."""


class TrainingDivergedError(HiddenCostError):
    """The training loss became NaN or infinite."""
