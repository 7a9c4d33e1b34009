"""Scorers by family: CLIP (clip.py), SigLIP and SigLIP 2, chosen by model_type."""
