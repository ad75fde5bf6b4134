"""Run tags Pulse Assets reads and writes."""

TRIGGER_TAG = "pulse/trigger"
DRIFTED_FEATURES_TAG = "pulse/drifted_features"
CUTOFF_TAG = "pulse/cutoff"
LIVE_CUTOFF = "live"  # the latest round retrained on everything labelled so far
