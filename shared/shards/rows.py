"""The row schema of `CAPTIONS/{shard}.parquet`: one row per sample, errors included.

Fixed here so every worker writes the same columns in the same order with the same types, and
`datasets.load_dataset("parquet", ...)` reads any set of these files as one table.
"""

from __future__ import annotations

import pyarrow as pa

from shared.core.outcomes import Outcome

# (column, type, meaning). Every column may be null except key, source_shard, member, outcome.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("key", pa.string(), "the sample's key in its source shard"),
    ("source_shard", pa.string(), "the URL of the input shard"),
    ("member", pa.string(), "the tar member of the image, or `row N` for Parquet input"),
    ("caption", pa.string(), "the caption as the model wrote it"),
    ("text", pa.string(), "the caption with the configured prefix and suffix (what {key}.txt holds)"),
    ("entities", pa.string(), "the grounded entities, as a JSON string"),
    ("clip_score", pa.float64(), "the score the threshold was applied to"),
    ("clip_score_method", pa.string(), "how clip_score was computed"),
    ("clip_score_original", pa.float64(), "the original script's score"),
    ("clip_score_sentence_chunks", pa.float64(), "the sentence-chunk score, when asked for"),
    ("clipscore", pa.float64(), "CLIPScore (2.5 x max(cosine, 0)), when asked for"),
    ("threshold", pa.float64(), "the threshold in force"),
    ("outcome", pa.string(), "output | clip_failed | errors"),
    ("caption_model", pa.string(), "the caption model's id or folder"),
    ("clip_model", pa.string(), "the CLIP model's id or folder"),
    ("prompt", pa.string(), "the prompt given to the caption model"),
    ("decoder", pa.string(), "the decoder that generated the caption"),
    ("width", pa.int32(), "the image's width in pixels"),
    ("height", pa.int32(), "the image's height in pixels"),
    ("content_sha256", pa.string(), "sha256 of the image bytes"),
    ("error_reason", pa.string(), "why the sample is an error, else null"),
    ("error_class", pa.string(), "the kind of error, else null"),
    ("worker", pa.string(), "the worker that captioned it"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _, _ in COLUMNS)
REQUIRED: frozenset[str] = frozenset({"key", "source_shard", "member", "outcome"})
OUTCOME_VALUES: frozenset[str] = frozenset(outcome.value for outcome in Outcome)

CAPTIONS_SCHEMA = pa.schema(
    [pa.field(name, kind, nullable=name not in REQUIRED) for name, kind, _ in COLUMNS],
    metadata={"kcap": "captions rows v1"},
)


_NAMES = frozenset(COLUMN_NAMES)
_INT32 = (-(2**31), 2**31 - 1)


def _value_problem(name: str, kind: pa.DataType, value: object) -> str | None:
    # Checked here in Python, row by row, so that a bad value fails at add() and names its row;
    # pyarrow converts whole row groups at once later, which is far cheaper than per row.
    if value is None:
        return None
    if pa.types.is_string(kind):
        ok = isinstance(value, str)
    elif pa.types.is_floating(kind):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]
    return None if ok else f"{name}={value!r} is not a {kind}"


def row_problem(row: dict[str, object]) -> str | None:
    """Why row does not fit the schema, or None."""
    if not _NAMES.issuperset(row):
        return f"unknown columns {sorted(set(row) - _NAMES)}: the captions schema has {list(COLUMN_NAMES)}"
    missing = sorted(name for name in REQUIRED if row.get(name) in (None, ""))
    if missing:
        return f"missing required columns {missing}"
    if row["outcome"] not in OUTCOME_VALUES:
        return f"outcome {row['outcome']!r} is not one of {sorted(OUTCOME_VALUES)}"
    for name, kind, _ in COLUMNS:
        problem = _value_problem(name, kind, row.get(name))
        if problem is not None:
            return problem
    return None
