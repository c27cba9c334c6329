"""OpenAI's completions API over a TextGenerator, without Ray."""

import asyncio
import json

import pytest
from starlette.requests import Request

from orchestrator import completions, predictor
from orchestrator.errors import RequestError
from tests.unit.test_predictor import write_lm


@pytest.fixture
def generator(tmp_path):
    return predictor.load(write_lm(tmp_path / "lm"), max_new_tokens=32)


def ask(generator, **payload):
    return completions.decode(generator, json.dumps(payload).encode())


def test_a_completion_continues_the_prompt_as_generate_does_in_openais_shape(generator):
    item, meta = ask(generator, model="lm", prompt=["def "], max_tokens=12, temperature=0, user="u1")
    assert item == generator.validate({"prompt": "def ", "max_new_tokens": 12, "temperature": 0, "top_k": None})
    completion = generator.generate([item])[0]
    answer = completions.encode(generator, item, completion, meta)
    assert answer["object"] == "text_completion" and answer["model"] == "lm" and answer["id"].startswith("cmpl-")
    assert answer["choices"] == [{"index": 0, "text": completion.decode(errors="replace"), "logprobs": None,
                                  "finish_reason": "length"}]
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}
    # OpenAI's defaults: 16 tokens, temperature 1, no top-k cut
    default, _ = ask(generator, prompt="x")
    assert (default[1].max_new_tokens, default[1].temperature, default[1].top_k) == (16, 1.0, None)
    # a stop sequence cuts the text before its first one, and says so
    _, meta = ask(generator, prompt="x", stop=["né", "zz", "de"])
    answer = completions.encode(generator, item, "abcdené".encode(), meta)
    assert answer["choices"][0]["text"] == "abc" and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 3
    assert completions.models(generator)["data"][0]["id"] == "lm"


@pytest.mark.parametrize("payload, status, code, words", [
    ({"prompt": "x", "stream": "yes"}, 400, "invalid_stream", "true or false"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "invalid_stream_options", '"stream": true'),
    ({"prompt": "x", "stream": True, "stream_options": {"usage": 1}}, 400, "invalid_stream_options", ""),
    ({"prompt": "x", "n": 2}, 400, "unsupported_n", "n 2"),
    ({"prompt": "x", "top_p": 0.9}, 400, "unsupported_top_p", "or send 1"),
    ({"prompt": "x", "logprobs": 5}, 400, "unsupported_logprobs", "logprobs 5"),
    ({"prompt": "x", "best_of": 3}, 400, "unsupported_best_of", ""),
    ({"prompt": "x", "foo": 1}, 400, "unknown_field", "unknown fields ['foo']"),
    ({"model": "gpt-4", "prompt": "x"}, 404, "model_not_found", "there is no model 'gpt-4' here: this endpoint "
                                                               "serves 'lm'"),
    ({"prompt": ["a", "b"]}, 400, "invalid_prompt", "one prompt a request"),
    ({"prompt": "x", "max_tokens": 33}, 400, "invalid_max_tokens", "from 1 to 32 (a token is a byte)"),
    ({"prompt": "x", "stop": ["a"] * 5}, 400, "invalid_stop", "up to 4"),
    ({"prompt": "x", "temperature": -1}, 422, "invalid_temperature", ""),
    ({"prompt": ""}, 422, "invalid_prompt", "non-empty"),
])
def test_what_the_model_cannot_do_is_refused_by_name(generator, payload, status, code, words):
    with pytest.raises(RequestError) as e:
        ask(generator, **payload)
    assert (e.value.status, e.value.code) == (status, code) and words in e.value.message, e.value.message
    assert completions.error_body(e.value)["error"]["message"] == e.value.message


def streamed(generator, completion: bytes, **payload) -> tuple[list[dict], str]:
    """completions.events over `completion`'s bytes, as the endpoint hands them over: its chunks, and whether it
    ended with [DONE]."""
    item, meta = ask(generator, prompt="x", stream=True, **payload)

    async def made():
        for byte in completion:
            yield byte

    async def read():
        return [e async for e in completions.events(generator, item, meta, made())]

    events = asyncio.run(read())
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    return [json.loads(e[6:]) for e in events[:-1]], events[-1]


@pytest.mark.parametrize("completion, stop", [
    ("abcdefgh".encode(), None),
    ("naïve café, 東京 ok".encode(), None),  # characters of 2 and 3 bytes: no chunk splits one
    ("abcdené".encode(), ["né", "zz", "de"]),
    ("abcd".encode(), ["abcd", "c"]),  # "c" is completed first: generation halts there, though "abcd" begins sooner
    ("ab\n\nc".encode(), "\n\n"),
    ("aaa".encode(), ["é"]),
    (b"ab\xc3", None),  # ends mid-character: U+FFFD, as the whole answer shows it
])
def test_a_stream_gives_the_whole_answers_text_in_chunks_as_openai_streams_it(generator, completion, stop):
    payload = {} if stop is None else {"stop": stop}
    item, meta = ask(generator, prompt="x", **payload)
    whole = completions.encode(generator, item, completion, meta)
    chunks, done = streamed(generator, completion, stream_options={"include_usage": True}, **payload)
    assert done == "data: [DONE]\n\n"
    *texts, last = chunks
    assert "".join(c["choices"][0]["text"] for c in texts) == whole["choices"][0]["text"]
    assert [c["choices"][0]["finish_reason"] for c in texts] == [None] * (len(texts) - 1) + [
        whole["choices"][0]["finish_reason"]]
    assert last["choices"] == [] and last["usage"] == whole["usage"]
    assert {(c["object"], c["model"], c["id"]) for c in chunks} == {("text_completion", "lm", chunks[0]["id"])}
    assert all(c["choices"][0]["text"] or c["choices"][0]["finish_reason"] for c in texts)  # no empty chunks
    plain, _ = streamed(generator, completion, **payload)
    assert "usage" not in plain[-1] and plain[-1]["choices"][0]["finish_reason"] is not None


def test_the_stream_stops_asking_the_model_at_a_stop_sequence(generator):
    item, meta = ask(generator, prompt="x", stream=True, stop=["c"], max_tokens=32)
    asked = []

    async def made():
        for byte in b"abcdefgh":
            asked.append(byte)
            yield byte

    async def read():
        return [e async for e in completions.events(generator, item, meta, made())]

    events = asyncio.run(read())
    assert bytes(asked) == b"abc" and "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]) == "ab"


def test_the_endpoint_streams_a_completion_the_model_makes_byte_by_byte(generator, tmp_path):
    """The replica's route, without Serve: the stream's text is the unstreamed answer's, made step by step."""
    from orchestrator.config import ServeArgs
    from orchestrator.endpoint import Endpoint
    from tests.unit.test_predictor import call, write_lm

    server = Endpoint()
    args = ServeArgs(checkpoint=write_lm(tmp_path / "served"), max_new_tokens=32, max_batch_size=1)
    body = {"prompt": "def ", "max_tokens": 20, "temperature": 0}

    def post(payload: dict) -> Request:
        return call("/v1/completions", json.dumps(payload).encode())

    async def calls():
        await server.reconfigure({"args": args.model_dump(mode="json")})
        whole = json.loads((await server.openai_completions(post(body))).body)
        response = await server.openai_completions(post({**body, "stream": True}))
        retrieved = await server.kserve_model(call("/v1/models/lm"), "lm")  # OpenAI's retrieve, FastAPI's JSON
        assert retrieved == completions.models(server.predictor)["data"][0]
        return whole, response.media_type, [e async for e in response.body_iterator]

    whole, media_type, events = asyncio.run(calls())
    for spec in ("2.4", "2.3"):  # the model stops with its stream: a few of the 32 steps asked for
        sent, made = steps_after_the_client_goes(server, post({**body, "max_tokens": 32, "stream": True}), spec)
        assert sent == 1 and made <= 4, (spec, sent, made)
    assert media_type == "text/event-stream" and events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert len(chunks) > 5 and chunks[-1]["choices"][0]["finish_reason"] == "length"


def steps_after_the_client_goes(server, request, spec: str) -> tuple[int, int]:
    """The stream served as Starlette serves it, to a client that goes once the first event arrives: (events
    sent, model steps taken). Under ASGI 2.4 a send after the client went raises OSError (as uvicorn's does);
    before it, Starlette learns it from receive."""
    made, sent, gone = [], [], asyncio.Event()
    steps = server.predictor.steps
    server.predictor.steps = lambda item: (made.append(b) or b for b in steps(item))

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if gone.is_set() and spec == "2.4":
            raise OSError("the client went")
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            gone.set()
            await asyncio.sleep(0.2)  # the disconnect lands before the next step is asked for

    async def serve():
        response = await server.openai_completions(request)
        try:
            await response({"type": "http", "asgi": {"spec_version": spec}}, receive, send)
        except Exception as e:  # noqa: BLE001 (Starlette's ClientDisconnect: the server's to handle)
            assert type(e).__name__ == "ClientDisconnect", e

    asyncio.run(serve())
    server.predictor.steps = steps
    return len(sent), len(made)
