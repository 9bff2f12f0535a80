"""What observes a run: completion metrics (one vocabulary for training and eval), the health monitor's warnings,
the progress line, metric loggers (TensorBoard, W&B, MLflow), the report page and retention."""
