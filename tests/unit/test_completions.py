"""OpenAI's completions API over a TextGenerator, without Ray."""

import json

import pytest

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
    ({"prompt": "x", "stream": True}, 400, "unsupported_stream", "stream true is not served by this model"),
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
