"""Floor 10: what a person reads: figures, the self-contained HTML report, the model card and the comparison of runs."""
