"""Run tags Pulse Assets reads and writes."""

from collections.abc import Mapping

from pulse_assets.errors import ConfigError

TRIGGER_TAG = "pulse/trigger"
DRIFTED_FEATURES_TAG = "pulse/drifted_features"
CUTOFF_TAG = "pulse/cutoff"
LIVE_CUTOFF = "live"  # the latest round retrained on everything labelled so far
BATCH_SIZE_TAG = "pulse/batch_size"  # the training batch size for this run (an OOM retry halves it)
# The sensor that re-requests this run's work itself (the freshness sensor on its runs): the
# failure handler records such a run's failure but leaves re-execution and the alert to it.
RETRIED_BY_TAG = "pulse/retried_by"


def batch_size_from_tags(tags: Mapping[str, str], default: int) -> int:
    """The run's training batch size: its ``pulse/batch_size`` tag, else ``default``."""
    value = tags.get(BATCH_SIZE_TAG)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"run tag {BATCH_SIZE_TAG}={value!r} must be a positive integer")
    return int(value)
