"""Training: the physics-based degradations, the data split, the loop with exact resume."""
