"""Floor 8: the training loop (trainer), its callbacks (the run-directory writer, TensorBoard, the epoch line) and MLflow tracking."""
