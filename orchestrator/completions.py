"""OpenAI's completions API over a TextGenerator, for the clients written against it (the `openai` package,
LangChain, curl from their docs): POST /v1/completions and GET /v1/models, as vLLM serves a base model.

    POST /v1/completions {"model": "text-lm", "prompt": "def ", "max_tokens": 16, "temperature": 0.7, "seed": 1}
    -> {"id": "cmpl-...", "object": "text_completion", "created": ..., "model": "text-lm",
        "choices": [{"index": 0, "text": "...", "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}}

With `"stream": true` the answer comes as server-sent events, a chunk of text as the model makes it, then
`data: [DONE]` (`stream_options: {"include_usage": true}` adds a last chunk of usage), as OpenAI streams it.

A token is a byte (the model is byte-level). OpenAI's defaults hold: 16 tokens, temperature 1, the whole
distribution (vLLM's `top_k` is taken too). A completion ends before the first stop sequence it completes,
where generation halts (vLLM's rule), streamed or not. What the model cannot do (several choices, log
probabilities, penalties, top_p below 1, a suffix) is a 400 that names the field, never silently ignored.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from collections.abc import AsyncIterator

from orchestrator.errors import RequestError

# fields a client may send with these values only: the model does one thing, so anything else is refused
ONLY = {"n": (1, None), "best_of": (1, None), "logprobs": (None, 0), "echo": (False, None),
        "presence_penalty": (0, None), "frequency_penalty": (0, None), "suffix": (None, ""), "logit_bias": (None, {}),
        "top_p": (1, None)}
TAKEN = {"model", "prompt", "max_tokens", "temperature", "top_k", "seed", "stop", "user", "stream", "stream_options"}


def decode(generator, body: bytes) -> tuple[tuple, dict]:
    """A completions request to the generator's item (prompt bytes, lm.Sampling) and what its answer needs:
    the stop sequences."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "invalid_json", 'send a JSON object {"model": "...", "prompt": "...", '
                           '"max_tokens": 16}')
    if unknown := sorted(set(payload) - TAKEN - set(ONLY)):
        raise RequestError(400, "unknown_field", f"unknown fields {unknown}; this endpoint takes {sorted(TAKEN)}")
    for field, allowed in ONLY.items():
        if field in payload and payload[field] not in allowed:
            raise RequestError(400, f"unsupported_{field}", f"{field} {json.dumps(payload[field])} is not served by "
                               f"this model: leave it out (or send {json.dumps(allowed[0])})")
    name = generator.info["name"]
    if payload.get("model") not in (None, name):
        raise RequestError(404, "model_not_found", f"there is no model {payload['model']!r} here: this endpoint "
                           f"serves {name!r}")
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(400, "invalid_prompt", "prompt must be a string (one prompt a request)")
    stop = payload.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(400, "invalid_stop", "stop must be a string or a list of up to 4 non-empty strings")
    stop = [s.encode(errors="surrogatepass") for s in stop]  # looked for in the bytes generated
    tokens = payload.get("max_tokens", 16)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= generator.max_new_tokens:
        raise RequestError(400, "invalid_max_tokens", f"max_tokens must be an integer from 1 to "
                           f"{generator.max_new_tokens} (a token is a byte)")
    stream, options = payload.get("stream") or False, payload.get("stream_options")
    if not isinstance(stream, bool):
        raise RequestError(400, "invalid_stream", "stream must be true or false")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not isinstance(options.get("include_usage", False), bool)):
        raise RequestError(400, "invalid_stream_options", 'stream_options goes with "stream": true, as '
                           '{"include_usage": true}')
    item = generator.validate({"prompt": prompt, "max_new_tokens": tokens, "temperature": payload.get("temperature", 1),
                               "top_k": payload.get("top_k"), "seed": payload.get("seed")})
    return item, {"stop": stop, "stream": stream, "usage": bool(options and options.get("include_usage"))}


def encode(generator, item: tuple, completion: bytes, meta: dict) -> dict:
    """The answer: the completion up to the first stop sequence it completes (finish_reason "stop"), else all
    of it ("length")."""
    kept = next((completion[:start] for end in range(1, len(completion) + 1)
                 if (start := _stop_at(completion, meta["stop"], end)) is not None), None)
    text = (completion if kept is None else kept).decode(errors="replace")  # bytes cut mid-character: U+FFFD
    return {**_head(generator),
            "choices": [_choice(text, "length" if kept is None else "stop")],
            "usage": _usage(item, len(completion if kept is None else kept))}


async def events(generator, item: tuple, meta: dict, made: AsyncIterator[int]) -> AsyncIterator[str]:
    """The answer as server-sent events, from the bytes the model makes as it makes them: a chunk of text as
    bytes complete characters, the last chunk with the finish_reason, usage where stream_options asked for it,
    then [DONE]. The text is encode's: bytes that may begin a stop sequence are held until they prove not to."""
    head, stops = _head(generator), meta["stop"]
    held = max(map(len, stops), default=1) - 1
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    extra = {"usage": None} if meta["usage"] else {}
    text, sent, finish = bytearray(), 0, "length"

    def event(body: dict) -> str:
        return f"data: {json.dumps({**head, **body})}\n\n"

    async for byte in made:
        text.append(byte)
        if (start := _stop_at(text, stops, len(text))) is not None:
            del text[start:]
            finish = "stop"
            break
        if len(text) - held > sent and (chunk := decoder.decode(bytes(text[sent:len(text) - held]))):
            yield event({"choices": [_choice(chunk, None)], **extra})
        sent = max(sent, len(text) - held)
    yield event({"choices": [_choice(decoder.decode(bytes(text[sent:]), final=True), finish)], **extra})
    if meta["usage"]:
        yield event({"choices": [], "usage": _usage(item, len(text))})
    yield "data: [DONE]\n\n"


def _stop_at(text: bytes | bytearray, stops: list[bytes], end: int) -> int | None:
    """Where a stop sequence that text[:end] ends with begins (the longest, where several end there)."""
    starts = [end - len(s) for s in stops if text.endswith(s, 0, end)]
    return min(starts) if starts else None


def _head(generator) -> dict:
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": generator.info["name"]}


def _choice(text: str, finish_reason: str | None) -> dict:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _usage(item: tuple, completion_tokens: int) -> dict:
    prompt = len(item[0])
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}


def models(predictor) -> dict:
    """GET /v1/models: the one model served."""
    return {"object": "list", "data": [{"id": predictor.info["name"], "object": "model", "created": 0,
                                        "owned_by": "orchestrator"}]}


def error_body(e: RequestError) -> dict:
    """An error in OpenAI's shape, which its clients read (`openai.BadRequestError`'s message)."""
    return {"error": {"message": e.message, "type": "invalid_request_error", "param": None, "code": e.code}}
