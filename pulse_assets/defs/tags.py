"""Run tags Pulse Assets reads and writes."""

TRIGGER_TAG = "pulse/trigger"
DRIFTED_FEATURES_TAG = "pulse/drifted_features"
