"""Done markers: the settings hash, writing and listing markers, and the skip/refuse/todo rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.core.errors import ConfigError
from shared.core.outcomes import Outcome
from shared.shards.markers import (
    Decision,
    DoneMarker,
    decide,
    marker_url,
    read_markers,
    refuse_mixed,
    settings_hash,
    write_marker,
)

BASE = {"caption_model": "microsoft/kosmos-2-patch14-224", "prompt": "Describe:", "threshold": 15.0}


def test_the_settings_hash_is_stable_and_sees_every_change() -> None:
    first = settings_hash(**BASE)
    assert first == settings_hash(**dict(reversed(list(BASE.items()))))  # order does not matter
    assert len(first) == 64 and int(first, 16) >= 0
    assert settings_hash(**{**BASE, "threshold": 15.5}) != first
    assert settings_hash(**{**BASE, "prompt": "Describe: "}) != first
    assert settings_hash(**BASE, caption_suffix="") != first
    assert settings_hash(model=Path("/m/kosmos")) == settings_hash(model="/m/kosmos")
    assert settings_hash(method=Outcome.OUTPUT) == settings_hash(method="output")
    with pytest.raises(TypeError, match="cannot hash a object"):
        settings_hash(model=object())


def _marker(name: str, hash_: str) -> DoneMarker:
    return DoneMarker(
        name=name,
        settings_hash=hash_,
        counts={"output": 7, "clip_failed": 2, "errors": 1},
        errors={"BadImageError": 1},
        source=f"/in/{name}.tar",
        outputs={"output": f"/out/{name}.tar", "captions": f"/cap/{name}.parquet"},
        worker="gpu-0@host",
        started_at=1.0,
    )


def test_markers_are_written_atomically_and_read_back_in_one_listing(tmp_path: Path) -> None:
    captions = tmp_path / "captions"
    assert read_markers(str(captions)) == {}  # no folder yet: nothing done
    written = {name: _marker(name, settings_hash(**BASE)) for name in ("00000", "00001")}
    for marker in written.values():
        assert write_marker(str(captions), marker) == marker_url(str(captions), marker.name)
    assert sorted(p.name for p in (captions / "_done").iterdir()) == ["00000.json", "00001.json"]
    read = read_markers(str(captions))
    assert read == written
    assert read["00000"].samples == 10 and read["00000"].kcap_version


def test_an_unreadable_marker_is_left_out_so_its_shard_is_done_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    captions = tmp_path / "captions"
    write_marker(str(captions), _marker("good", "h"))
    (captions / "_done" / "torn.json").write_text('{"name": "torn", "settings_')
    (captions / "_done" / "list.json").write_text("[1, 2]")
    (captions / "_done" / ".kcap-tmp-1-x.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        read = read_markers(str(captions))
    assert list(read) == ["good"]
    assert "torn.json" in caplog.text and "list.json" in caplog.text


def test_decisions_todo_skip_refuse_and_overwrite() -> None:
    same, other = settings_hash(**BASE), settings_hash(**{**BASE, "threshold": 20.0})
    markers = {"done": _marker("done", same), "changed": _marker("changed", other)}
    assert decide("new", markers, same).action is Decision.TODO
    skip = decide("done", markers, same)
    assert skip.action is Decision.SKIP and "same settings (10 samples)" in skip.reason
    refuse = decide("changed", markers, same)
    assert refuse.action is Decision.REFUSE
    assert "pass --overwrite to redo it, or write to another captions folder" in refuse.reason
    assert decide("changed", markers, same, overwrite=True).action is Decision.TODO
    assert decide("done", markers, same, overwrite=True).action is Decision.TODO
    decisions = {name: decide(name, markers, same) for name in ("new", "done", "changed")}
    with pytest.raises(ConfigError, match="shard changed was captioned with other settings"):
        refuse_mixed(decisions)
    refuse_mixed({name: decide(name, markers, same) for name in ("new", "done")})
