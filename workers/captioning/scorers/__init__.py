"""Scorers by family: CLIP (workers.captioning.scorer), SigLIP and SigLIP 2, chosen by model_type."""
