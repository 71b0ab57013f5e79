"""Floor 10: the vaekit command: the parser (main) and the commands over the pipeline."""
