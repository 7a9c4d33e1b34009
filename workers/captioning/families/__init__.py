"""Captioners by family: one adapter module per model family, chosen by the checkpoint's model_type."""
