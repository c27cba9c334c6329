"""OpenAI's completions API over a TextGenerator, for the clients written against it (the `openai` package,
LangChain, curl from their docs): POST /v1/completions and GET /v1/models, as vLLM serves a base model.

    POST /v1/completions {"model": "text-lm", "prompt": "def ", "max_tokens": 16, "temperature": 0.7, "seed": 1}
    -> {"id": "cmpl-...", "object": "text_completion", "created": ..., "model": "text-lm",
        "choices": [{"index": 0, "text": "...", "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}}

A token is a byte (the model is byte-level). OpenAI's defaults hold: 16 tokens, temperature 1, the whole
distribution (vLLM's `top_k` is taken too). What the model cannot do (streaming, several choices, log
probabilities, penalties, top_p below 1, a suffix) is a 400 that names the field, never silently ignored.
"""

from __future__ import annotations

import json
import time
import uuid

from orchestrator.errors import RequestError

# fields a client may send with these values only: the model does one thing, so anything else is refused
ONLY = {"stream": (False, None), "n": (1, None), "best_of": (1, None), "logprobs": (None, 0), "echo": (False, None),
        "presence_penalty": (0, None), "frequency_penalty": (0, None), "suffix": (None, ""), "logit_bias": (None, {}),
        "top_p": (1, None), "stream_options": (None,)}
TAKEN = {"model", "prompt", "max_tokens", "temperature", "top_k", "seed", "stop", "user"}


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
    item = generator.validate({"prompt": prompt, "max_new_tokens": tokens, "temperature": payload.get("temperature", 1),
                               "top_k": payload.get("top_k"), "seed": payload.get("seed")})
    return item, {"stop": stop}


def encode(generator, item: tuple, completion: bytes, meta: dict) -> dict:
    """The answer: the completion cut before the first stop sequence (finish_reason "stop"), else all of it
    ("length")."""
    cuts = [i for i in (completion.find(s) for s in meta["stop"]) if i >= 0]
    kept = completion[:min(cuts)] if cuts else completion
    text = kept.decode(errors="replace")  # bytes cut mid-character show as U+FFFD
    used, prompt = len(kept), len(item[0])
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": generator.info["name"],
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop" if cuts else "length"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": used, "total_tokens": prompt + used}}


def models(predictor) -> dict:
    """GET /v1/models: the one model served."""
    return {"object": "list", "data": [{"id": predictor.info["name"], "object": "model", "created": 0,
                                        "owned_by": "orchestrator"}]}


def error_body(e: RequestError) -> dict:
    """An error in OpenAI's shape, which its clients read (`openai.BadRequestError`'s message)."""
    return {"error": {"message": e.message, "type": "invalid_request_error", "param": None, "code": e.code}}
