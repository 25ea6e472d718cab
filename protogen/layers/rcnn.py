"""Two-stage detector layers (placeholder while written)."""
