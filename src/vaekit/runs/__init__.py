"""Floor 6: the run directory as a store: its layout (declared once), recognition, lock, schemas and the checkpoint's one atomic unit."""
