"""Kosmos-2: its adapter, captioner, kcap's static decoder (decode step, KV cache), --compile."""
