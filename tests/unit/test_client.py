"""The client retry policy (orchestrator/client.py) against a scripted HTTP server on loopback."""

import json
import socket
import threading

import pytest

from orchestrator.client import Unreachable, post_json, stream_completion


def scripted_server(answers: list[bytes]):
    """A loopback server that answers its n-th connection with answers[n] (raw bytes, then it closes),
    for as many connections as there are answers. Returns (url, the request bodies it took, in order)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    taken = []

    def serve():
        with listener:
            for answer in answers:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(10)
                    request = b""
                    while b"\r\n\r\n" not in request and (chunk := conn.recv(65536)):  # b"": the client left
                        request += chunk
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                       if line.lower().startswith(b"content-length")), 0))
                    while len(body) < length and (chunk := conn.recv(65536)):
                        body += chunk
                    taken.append(body)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1/predict", taken


def reply(status: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data


def test_an_answer_cut_off_midway_is_sent_again():
    whole = reply("200 OK", {"predictions": [1]})
    cut = whole[: whole.index(b"\r\n\r\n") + 6]  # the headers and 2 bytes of the body, then the server closes
    url, taken = scripted_server([cut, whole])
    stats = {}
    assert post_json(url, {"instances": [[0]]}, retries=2, backoff_s=0.01, stats=stats) == (200, {"predictions": [1]})
    assert stats["retries"] == 1 and len(taken) == 2 and taken[0] == taken[1]


def test_a_4xx_is_never_sent_again_and_no_answer_at_all_is_unreachable():
    url, taken = scripted_server([reply("422 Unprocessable Entity", {"error": {"code": "wrong_shape"}})])
    status, body = post_json(url, {"instances": []}, retries=3, backoff_s=0.01)
    assert status == 422 and body["error"]["code"] == "wrong_shape" and len(taken) == 1
    url, taken = scripted_server([b"", b""])  # closed without a word, twice
    with pytest.raises(Unreachable, match="cannot reach"):
        post_json(url, {"instances": []}, retries=1, backoff_s=0.01)
    assert len(taken) == 2


def test_predict_reads_a_file_for_an_endpoint_as_the_endpoints_model_was_trained(tmp_path, capsys):
    """A model trained on iris.data (no header row; data.column_names, data.format: csv): `predict URL --input
    new.data` had read the file as JSON, and keyed its rows column1, ... where the model takes its names.
    The endpoint's GET /v1/model says how its training read its data."""
    from orchestrator.cli import main

    data = {"name": "files", "path": "iris.data", "format": "csv", "label_column": "kind", "blank_values": ["?"],
            "column_names": ["width", "area", "kind"]}
    predicted = {"predictions": [{"label": "a", "class_index": 0, "probabilities": [1.0]}] * 2, "labels": ["a"],
                 "model": {"name": "iris", "version": "v"}}
    url, taken = scripted_server([reply("200 OK", {"config": {"data": data}}), reply("200 OK", predicted)])
    (tmp_path / "new.data").write_text("1.5,?\n2.5,3\n")
    assert main(["predict", url.removesuffix("/v1/predict"), "--input", str(tmp_path / "new.data"), "--json"]) == 0
    assert json.loads(taken[1])["instances"] == [{"width": 1.5, "area": None}, {"width": 2.5, "area": 3}]


def events(*texts: str, ended: bool = True) -> bytes:
    """A streamed completion's answer: an event per text in one chunk, then [DONE] and the last chunk; or, not
    ended, the server closes after the texts."""
    body = b"".join(f"data: {json.dumps({'choices': [{'text': t}]})}\n\n".encode() for t in texts)
    body += b"data: [DONE]\n\n" if ended else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(body):x}\r\n".encode() + body + b"\r\n" + (b"0\r\n\r\n" if ended else b""))


def test_a_stream_is_sent_again_until_it_begins_and_never_after():
    url, taken = scripted_server([reply("503 Service Unavailable", {"error": {"message": "busy"}}),
                                  events("ab", "c")])
    endpoint = url.removesuffix("/v1/predict")
    assert list(stream_completion(endpoint, {"prompt": "x"})) == ["ab", "c"]
    assert len(taken) == 2 and json.loads(taken[1]) == {"prompt": "x", "stream": True}
    url, taken = scripted_server([events("ab", ended=False), events("ab", "c")])
    shown = []
    with pytest.raises(RuntimeError, match="the stream broke off"):
        for text in stream_completion(url.removesuffix("/v1/predict"), {"prompt": "x"}):
            shown.append(text)
    assert shown == ["ab"] and len(taken) == 1  # "ab" was shown: sending again would show it twice
