"""Data drift between the champion's training features and recent ones (the plan's check_data_drift)."""
