"""Floor 1: files on disk. Atomic writes and locks (files), guarded reads, PNG grids (images)."""
