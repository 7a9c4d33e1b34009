"""Tolerances that follow from floating-point arithmetic, for tests that compare one number
computed two ways.

A float sum of n products is off from the exact value by at most gamma_n * sum(|a_i * b_i|),
gamma_n = n*u / (1 - n*u) ~ n*u, where u is the unit roundoff (2**-24 in float32, 2**-53 in
float64; Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1). Two
computations of it in different orders (another batch shape, padding length or kernel
blocking) then differ by at most 2*n*u = n*eps, eps = 2**-23 ~ 1.19e-7 in float32.

Through a network the first-order errors of the dot products that lead to an output add up
along that chain (each layer norm brings its activations back to unit scale, so a step
carries the relative error it got and adds its own), so n is the sum of the chain's lengths,
and sum(|products|) ~ 1 for the unit-norm embeddings at its end. What is compared is scaled
by the factor in front of the cosine: a CLIP logit is logit_scale x cosine, so its error is
logit_scale x n x eps whatever the logit's own value (0.34 or 30 alike). This is the
worst-case bound; rounding errors that partly cancel make the differences seen smaller.
"""

from __future__ import annotations

from typing import Any

FLOAT32_EPS = 2.0**-23
FLOAT64_UNIT = 2.0**-53  # the unit roundoff u: one correctly rounded float64 operation


def float32_spread(chain: int, *, scale: float) -> float:
    """The most two float32 computations of scale x (a unit-scale result of a chain of dot
    products of total length chain) can differ: scale x chain x eps."""
    return scale * chain * FLOAT32_EPS


def encoder_chain(config: Any, *, seq: int, layers: int | None = None) -> int:
    """The dot-product lengths on the way through a pre-norm transformer encoder to one output.

    Per layer: two layer norms (a mean and a variance over hidden: 2 x hidden each), the
    q/k/v projection (hidden), an attention score (the head size), the softmax's sum and the
    weighted sum of values over the sequence (seq each), the output projection (hidden) and
    the MLP (hidden, then intermediate). Then the final layer norm and a projection (3 x hidden).
    """
    hidden = int(config.hidden_size)
    head = hidden // int(config.num_attention_heads)
    per_layer = 7 * hidden + head + 2 * seq + int(config.intermediate_size)
    return (layers or int(config.num_hidden_layers)) * per_layer + 3 * hidden


def image_tokens(vision: Any) -> int:
    """The vision tower's sequence: its patches and a class token (an upper bound where there is none)."""
    patches = getattr(vision, "num_patches", None)
    if patches is None:
        patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
    return int(patches) + 1


def dual_encoder_chain(config: Any, *, text_tokens: int | None = None) -> int:
    """The chain of a CLIP-style cosine: the image tower (its patch embedding of channels x
    patch^2 terms, the encoder, and one more layer for a pre-norm or a pooling head), the text
    tower (text_tokens long, by default its whole window), and the cosine of their embeddings
    (two norms and a dot product, each over the embedding size). Both towers' errors reach the
    cosine, so their chains add."""
    vision, text = config.vision_config, config.text_config
    patch_in = int(getattr(vision, "num_channels", 3)) * int(vision.patch_size) ** 2
    image = patch_in + encoder_chain(
        vision, seq=image_tokens(vision), layers=int(vision.num_hidden_layers) + 1
    )
    tokens = text_tokens or int(text.max_position_embeddings)
    words = encoder_chain(text, seq=tokens)
    embedding = getattr(config, "projection_dim", None) or int(text.hidden_size)
    return image + words + 3 * int(embedding)


def float64_error(roundings: int, *, magnitude: float) -> float:
    """The most a float64 result of `roundings` correctly rounded operations on values up to
    magnitude can be off from the exact one: roundings x u x magnitude."""
    return roundings * FLOAT64_UNIT * magnitude


def score_spreads(scorer: Any, *, slices: int, chunks: int) -> dict[str, float]:
    """How far two computations of each of a scorer's numbers (workers.captioning.scorers.clip.Score)
    for one caption can differ. Each is a factor times a mean of cosines: the mean adds a
    rounding per term and the factor one more, to the towers' chain. SigLIP's sigmoid
    statistic is a mean over chunks of sigmoid(scale x cosine + bias): sigmoid's slope is at
    most 1/4, and adding the bias rounds once more at the size of scale + |bias|."""
    chain = dual_encoder_chain(scorer.model.config)
    scale = float(scorer.logit_scale)
    sentence = chain + chunks + 1
    spreads = {
        "original": float32_spread(chain + slices + 1, scale=scale),
        "sentence_chunks": float32_spread(sentence, scale=100.0),
        "clipscore": float32_spread(sentence, scale=2.5),
    }
    bias = getattr(scorer, "logit_bias", None)
    if bias is not None:
        logit = float32_spread(chain + 1, scale=scale) + (scale + abs(float(bias))) * FLOAT32_EPS
        spreads["sigmoid"] = logit / 4 + float32_spread(chunks, scale=1.0)
    return spreads
