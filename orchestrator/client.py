"""Calling an endpoint, with the retry policy this project documents for its clients.

A prediction is idempotent, so a client may send it again. Retry on connection errors (an answer
cut off midway included) and on 500, 502, 503 and 504, at most `retries` times. Wait with
exponential backoff and full jitter (`backoff_s * 2**attempt`, capped at `max_backoff_s`), or for
a 503's Retry-After when it is longer. Never retry a 4xx: the request itself must change. Ray Serve does not retry a request
whose replica died mid-request (the client gets a 500), so this policy is what turns a replica
failure into a slower answer instead of an error.

    status, body = post_json("http://127.0.0.1:8000/v1/predict", {"instances": [...]}, api_key="...")
    answer = predict_all("http://127.0.0.1:8000", instances)  # any number, split to fit; 4xx -> ConfigError
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from orchestrator.errors import ConfigError

RETRYABLE = (500, 502, 503, 504)


class Unreachable(Exception):
    """No answer at all after every retry (nothing listens, or the connection keeps failing)."""


def post_json(url: str, payload: dict, *, api_key: str | None = None, retries: int = 4, backoff_s: float = 0.2,
              max_backoff_s: float = 5.0, timeout_s: float = 60, stats: dict | None = None) -> tuple[int, dict]:
    """POST payload as JSON; (status, parsed body) of the last answer. `stats["retries"]` counts retries."""
    return _send(url, json.dumps(payload).encode(), api_key, retries, backoff_s, max_backoff_s, timeout_s, stats)


def get_json(url: str, *, api_key: str | None = None, retries: int = 4, timeout_s: float = 60) -> tuple[int, dict]:
    """GET a JSON answer (GET /v1/model), with the same retries; (status, parsed body)."""
    return _send(url, None, api_key, retries, 0.2, 5.0, timeout_s, None)


def _send(url: str, body: bytes | None, api_key: str | None, retries: int, backoff_s: float, max_backoff_s: float,
          timeout_s: float, stats: dict | None, read=None) -> tuple[int, dict]:
    """(status, answer): by `read` of the open response where it succeeds (default: its JSON), else the
    error's JSON. `read` may hand the response on, open (a stream), and an error while it reads is retried."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=body, headers=headers)
        retry_after = 0.0
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s)
            return response.status, (read or _json)(response)
        except urllib.error.HTTPError as e:
            status, answer = e.code, _parse(e.read())
            if status not in RETRYABLE or attempt == retries:
                return status, answer
            retry_after = _seconds(e.headers.get("Retry-After"))
        # a connection refused, reset or timed out, or an answer cut off (IncompleteRead: the replica died
        # while it sent the body): nothing usable came back
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
            if attempt == retries:
                raise Unreachable(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
        if stats is not None:
            stats["retries"] = stats.get("retries", 0) + 1
        time.sleep(max(retry_after, random.uniform(0, min(max_backoff_s, backoff_s * 2**attempt))))
    raise AssertionError("unreachable")  # the loop always returns or raises


def _json(response) -> dict:
    with response:
        return json.loads(response.read())


def stream_completion(target: str, payload: dict, api_key: str | None = None) -> Iterator[str]:
    """POST /v1/completions with "stream": true (OpenAI's completions): the text in chunks as the endpoint sends
    them. Retried as any request until the stream begins, never after (text already shown cannot be taken back);
    a 4xx raises ConfigError."""
    url = f"{target.rstrip('/')}/v1/completions"
    try:
        status, answer = _send(url, json.dumps({**payload, "stream": True}).encode(), api_key, 4, 0.2, 5.0, 60, None,
                               read=lambda response: response)
    except Unreachable as e:
        raise ConfigError(str(e)) from None
    if status >= 300:
        _checked(url, status, answer)
    with answer as events:
        try:
            for line in events:  # server-sent events: "data: {...}" lines, the last "data: [DONE]"
                if line.strip() == b"data: [DONE]":
                    return
                if line.startswith(b"data: {"):
                    for choice in json.loads(line[len(b"data: "):])["choices"]:
                        yield choice["text"]
            error = "it ended before data: [DONE]"  # http.client ends a chunked body cut between chunks quietly
        except (http.client.HTTPException, OSError) as e:
            error = f"{type(e).__name__}: {e}"
    raise RuntimeError(f"{url}: the stream broke off ({error})")  # the replica died, the network went: exit 1


def _parse(raw: bytes) -> dict:
    try:
        answer = json.loads(raw)
    except ValueError:
        return {"error": {"code": "not_json", "message": raw.decode(errors="replace")[:500]}}
    return answer if isinstance(answer, dict) else {"error": {"code": "not_json", "message": str(answer)[:500]}}


def _seconds(value: str | None) -> float:
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:
        return 0.0


def predict_all(target: str, instances: list, api_key: str | None = None) -> dict:
    """Every instance, in as few requests as the endpoint takes: a request over its max_instances or
    max_body_bytes is sent again as two halves, and the answers are joined in order."""
    start, per_request, joined = 0, len(instances), None
    while joined is None or start < len(instances):  # no instances: one request, for the endpoint's 422
        chunk = instances[start : start + per_request]
        url, status, answer = _post(target, "/v1/predict", {"instances": chunk}, api_key)
        if (answer.get("error") or {}).get("code") in ("too_many_instances", "body_too_large") and per_request > 1:
            per_request = (per_request + 1) // 2
            continue
        answer = _checked(url, status, answer)
        if joined and answer.get("model") != joined.get("model"):  # an update landed between two requests
            print(f"warning: predictions from {start} on come from {answer.get('model')}, not {joined.get('model')}",
                  file=sys.stderr)
        joined = answer if joined is None else {**answer, "predictions": joined["predictions"] + answer["predictions"]}
        start += len(chunk)
    return joined


def described(target: str, api_key: str | None = None) -> dict:
    """The endpoint's GET /v1/model (its model's config, columns, labels, ...); {} where it gives none."""
    url = target.rstrip("/").removesuffix("/v1/predict") + "/v1/model"
    try:
        status, answer = get_json(url, api_key=api_key, retries=1)
    except (Unreachable, ValueError):  # the prediction that follows names what is wrong
        return {}
    return answer if status == 200 else {}


def call(target: str, route: str, payload: dict, api_key: str | None = None) -> dict:
    """POST to an endpoint's route with the retry policy; a 4xx raises ConfigError (the CLI's exit 2)."""
    return _checked(*_post(target, route, payload, api_key))


def _post(target: str, route: str, payload: dict, api_key: str | None) -> tuple[str, int, dict]:
    url = target.rstrip("/")
    url = url if url.endswith(route) else f"{url}{route}"
    try:  # retried on 5xx and connection errors, never on 4xx
        return url, *post_json(url, payload, api_key=api_key)
    except Unreachable as e:
        raise ConfigError(str(e)) from None


def _checked(url: str, status: int, result: dict) -> dict:
    if status >= 300:
        message = (result.get("error") or {}).get("message", result)
        if 400 <= status < 500:
            raise ConfigError(f"{url} answered {status}: {message}")
        raise RuntimeError(f"{url} answered {status}: {message}")
    return result
