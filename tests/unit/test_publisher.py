"""What Flower shows of a task: the files it carries (argsrepr), never image bytes or a password."""

from __future__ import annotations

from urllib.parse import urlsplit

from kombu import Connection, Queue

from shared.core.celery_app import make_app
from shared.core.messages import CaptionOptions, Job, Result
from shared.core.publisher import SHOWN_NAMES, CeleryPublisher, shown_as
from shared.core.settings import Settings
from tests.integration.helpers import job_for


def _headers(url: str, queue: str) -> dict[str, object]:
    with Connection(url) as connection:
        message = Queue(queue)(connection.default_channel).get(no_ack=True)
        assert message is not None, f"nothing on {queue}"
        return dict(message.headers)


def test_a_caption_job_and_a_route_batch_show_their_file_names(redis_url: str) -> None:
    settings = Settings(broker_url=redis_url)
    app = make_app(settings)
    publisher = CeleryPublisher(app, caption_queue=settings.caption_queue, route_queue=settings.route_queue)
    data = b"\x89PNG not really an image, but bytes Flower must never show"
    job = job_for(data, CaptionOptions(prompts=("detailed",)), "trip/beach day.jpg")
    publisher.send_job(job)
    headers = _headers(redis_url, settings.caption_queue)
    assert headers["argsrepr"] == "['trip/beach day.jpg']"
    assert headers["kwargsrepr"] == "{}"

    results = [
        Result(
            job_id=f"{i:032x}", rel_path=f"batch/img-{i:02d}.png", content_sha256=job.content_sha256, ok=True
        )
        for i in range(20)
    ]
    publisher.send_results(results, queue=settings.route_queue)
    shown = str(_headers(redis_url, settings.route_queue)["argsrepr"])
    assert "'batch/img-00.png'" in shown and f"'batch/img-{SHOWN_NAMES - 1:02d}.png'" in shown
    assert f"... {20 - SHOWN_NAMES} more" in shown and "img-19" not in shown
    password = urlsplit(redis_url).password
    assert password and password not in repr(headers) + shown
    assert Job.encode_bytes(data) not in repr(headers) + shown
    app.close()


def test_a_long_path_keeps_its_file_name() -> None:
    long = "deep/" * 60 + "the-one.jpg"
    shown = shown_as([long])["argsrepr"]
    assert shown.endswith("the-one.jpg']") and len(shown) < 140
