"""Model training (the plan's RecursiveTrainingOrchestrator, create_model, CheckpointManager)."""
