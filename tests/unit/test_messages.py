from __future__ import annotations

import json

import pytest

from shared.core.errors import DecodeError
from shared.core.messages import CaptionOptions, Job, Result


def _job(**changes: object) -> Job:
    values: dict[str, object] = {
        "job_id": "0123abcd",
        "rel_path": "sub/a.jpg",
        "content_sha256": "ab" * 32,
        "size": 3,
        "mtime": 1.5,
        "image_b64": Job.encode_bytes(b"\xff\xd8\xff"),
        "options": CaptionOptions(prompts=("p",), max_new_tokens=8, score=True),
        "enqueued_at": 2.0,
    }
    values.update(changes)
    return Job(**values)  # type: ignore[arg-type]


def test_job_round_trips_as_json() -> None:
    job = _job()
    wire = job.encode()
    assert json.loads(wire)["kind"] == "job"
    assert Job.decode(wire) == job
    assert job.image_bytes() == b"\xff\xd8\xff"


def test_decode_errors_carry_the_raw_payload() -> None:
    with pytest.raises(DecodeError) as caught:
        Job.decode("{not json")
    assert caught.value.payload == "{not json"
    bad = {**_job().to_dict(), "surprise": 1}
    with pytest.raises(DecodeError, match="unknown fields") as caught:
        Job.from_dict(bad)
    assert caught.value.payload == bad
    with pytest.raises(DecodeError, match="wrong message kind"):
        Result.from_dict(_job().to_dict())
    with pytest.raises(DecodeError, match="missing"):
        Job.from_dict({"job_id": "x"})


def test_image_bytes_must_be_base64() -> None:
    with pytest.raises(DecodeError, match="not base64"):
        _job(image_b64="***").image_bytes()


def test_ids_that_could_steer_a_file_name_are_refused() -> None:
    # Ids become parts of file names (the collision rule), so only lowercase hex is allowed.
    for changes in ({"content_sha256": "/../../z" + "0" * 56}, {"job_id": "../x"}, {"job_id": "ABCDEF12"}):
        with pytest.raises(DecodeError, match="lowercase hex"):
            Job.from_dict({**_job().to_dict(), **changes})


def test_caption_options_travel_nested_and_come_back_as_a_hashable_batch_key() -> None:
    options = CaptionOptions(
        prompts=("a", "b"), strip_openings=("The image shows",), score=True, route_score="sentence-chunks"
    )
    job = _job(options=options)
    back = Job.decode(job.encode())
    assert back.options == job.options
    assert back.options.route_score == "sentence-chunks"
    with pytest.raises(DecodeError, match="route_score"):
        Job.from_dict({**job.to_dict(), "options": {**job.options.to_dict(), "route_score": "best"}})
    assert json.loads(job.encode())["options"]["prompts"] == ["a", "b"]
    keys = {back.options.for_prompt(p) for p in back.options.prompts}
    assert {k.prompt for k in keys} == {"a", "b"}
    with pytest.raises(DecodeError, match="prompts"):
        Job.from_dict({**job.to_dict(), "options": {**job.options.to_dict(), "prompts": []}})
    with pytest.raises(DecodeError, match="unknown fields"):
        Job.from_dict({**job.to_dict(), "options": {**job.options.to_dict(), "beams": 4}})
