"""Reading what kcap shows: HTTP with or without basic auth, Prometheus text, `kcap status`."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import kcap_to_the_end


def http_get(url: str, *, auth: str | None = None, timeout_s: float = 10.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode(errors="replace")


def answers(url: str, *, auth: str | None = None) -> bool:
    try:
        return http_get(url, auth=auth, timeout_s=2)[0] == 200
    except OSError:
        return False


Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str, *, auth: str | None = None) -> Samples:
    """Every sample of a Prometheus text page, parsed by prometheus-client's own parser."""
    status, text = http_get(url, auth=auth)
    assert status == 200, (url, status, text[:500])
    families = text_string_to_metric_families(text)
    return [(s.name, dict(s.labels), s.value) for family in families for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include the given ones.

    No such sample fails the test: a metric that is missing must never read as 0.
    """
    found = [v for n, have, v in samples if n == name and labels.items() <= have.items()]
    assert found, f"no sample {name}{labels or ''} among {sorted({n for n, _, _ in samples})}"
    return sum(found)


def value_or_zero(samples: Samples, name: str, **labels: str) -> float:
    """value(), for polling a counter that appears with its first event."""
    return sum(v for n, have, v in samples if n == name and labels.items() <= have.items())


def kcap_status(env: Mapping[str, str], *args: str) -> dict[str, object]:
    done = kcap_to_the_end(env, "status", "--json", *args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report
