"""The byte-level language model on the shared local Ray: it learns the default corpus; FSDP on 2
CPU workers (gloo), stopped after 1 epoch and resumed from its sharded checkpoint, trains as
uninterrupted DDP does; the checkpoint generates text offline and over HTTP (POST /v1/generate)."""

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from orchestrator import lm
from orchestrator.checkpoint import export, read_checkpoint
from orchestrator.cli import main
from orchestrator.config import ServeArgs, load_config
from orchestrator.data import read_corpus
from orchestrator.errors import StorageError
from orchestrator.predictor import TextGenerator
from orchestrator.train import train
from tests.conftest import ROOT, free_port, http

pytestmark = pytest.mark.ray
JOB = ROOT / "jobs" / "text-lm.yaml"
# a small slice of the default corpus and a constant LR
SMALL = ["data.max_bytes=60000", "model.n_layer=2", "model.d_model=64", "optim.schedule=constant",
         "optim.warmup_epochs=0", "train.batch_size_per_worker=8", "train.num_workers=2", "train.cpus_per_worker=1"]


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """On 2 workers: DDP for 2 epochs straight, and FSDP for 1 epoch, then resumed by its run name to 2."""
    tmp = tmp_path_factory.mktemp("lm-runs")

    def run(strategy: str, epochs: int, keep: int):
        return train(load_config(JOB, SMALL + [
            f"storage.path={tmp}", f"train.run_name={strategy}", f"train.strategy={strategy}",
            f"train.epochs={epochs}", f"train.num_to_keep={keep}"]))

    return {"tmp": tmp, "ddp": run("ddp", 2, 1), "fsdp_first": run("fsdp", 1, 2), "fsdp": run("fsdp", 2, 2)}


def history(result) -> list[dict]:
    return read_checkpoint(result.checkpoint).train_state()["history"]


def test_it_learns_the_default_corpus_below_its_unigram_entropy(runs):
    cfg = load_config(JOB, SMALL)
    corpus = np.frombuffer(read_corpus(cfg.data), dtype=np.uint8)
    p = np.bincount(corpus, minlength=256) / len(corpus)
    unigram = float(-(p[p > 0] * np.log(p[p > 0])).sum())  # nats per byte
    m = runs["ddp"].metrics
    print(f"unigram entropy {unigram:.3f} nats/byte; test loss {m['test_loss']:.3f}, "
          f"perplexity {m['test_perplexity']:.2f}, {m['test_bits_per_byte']:.3f} bits/byte")
    assert m["test_loss"] < unigram - 0.3
    assert math.isclose(m["test_perplexity"], math.exp(m["test_loss"]), rel_tol=1e-9)
    assert math.isclose(m["test_bits_per_byte"], m["test_loss"] / math.log(2), rel_tol=1e-9)
    assert [h["epoch"] for h in history(runs["ddp"])] == [1, 2]


def test_ddp_on_two_workers_keeps_num_to_keep_checkpoints(runs):
    result, run = runs["ddp"], runs["tmp"] / "ddp"
    assert result.start_epoch == 0
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-0002"]  # num_to_keep 1
    saved = json.loads((run / "result.json").read_text())
    assert saved["checkpoint"] == result.checkpoint and (run / "config.yaml").exists()


def test_fsdp_resumed_from_its_sharded_checkpoint_trains_as_uninterrupted_ddp_does(runs):
    fsdp_dir = runs["tmp"] / "fsdp" / "epoch-0002"
    shards = sorted(p.name for p in fsdp_dir.glob("shard-*"))
    assert shards == ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"]
    assert not (fsdp_dir / "model.safetensors").exists()  # no worker ever held the whole model to save it
    assert (runs["fsdp_first"].start_epoch, runs["fsdp"].start_epoch) == (0, 1)  # resumed after sharded epoch 1

    ddp, fsdp = history(runs["ddp"]), history(runs["fsdp"])
    for key in ("train_loss", "val_loss"):
        print(key, "ddp", [round(h[key], 5) for h in ddp], "fsdp", [round(h[key], 5) for h in fsdp])
        assert np.allclose([h[key] for h in fsdp], [h[key] for h in ddp], rtol=1e-3)
    # the weights agree too, the shards joined against DDP's whole model: within what ~100 Adam steps
    # of 3e-3 make of float rounding (reduce-scatter and all-reduce sum in different orders)
    joined, whole = read_checkpoint(str(fsdp_dir)).model_state(), read_checkpoint(runs["ddp"].checkpoint).model_state()
    assert joined.keys() == whole.keys()
    assert max(float((joined[k] - whole[k]).abs().max()) for k in whole) < 1e-2


def test_a_sharded_checkpoint_exports_to_the_serving_format_and_generates_the_same_text(runs):
    sharded = str(runs["tmp"] / "fsdp" / "epoch-0002")
    exported = export(sharded, str(runs["tmp"] / "exported"))
    assert (runs["tmp"] / "exported" / "model.safetensors").exists()
    assert not list((runs["tmp"] / "exported").glob("shard-*"))
    with pytest.raises(StorageError, match="already holds a checkpoint"):  # never written over
        export(sharded, exported)
    texts = []
    for uri in (sharded, exported):
        generator = TextGenerator(read_checkpoint(uri))
        texts.append(generator.generate([(b"def ", lm.Sampling(max_new_tokens=40, seed=3))])[0])
    assert texts[0] == texts[1] and len(texts[0]) == 40


@pytest.fixture(scope="module")
def endpoint(runs):
    from ray import serve as ray_serve

    from orchestrator import serve

    port = free_port()
    http_options = {"host": "127.0.0.1", "port": port, "request_timeout_s": 30}
    args = ServeArgs.model_validate({"checkpoint": runs["ddp"].checkpoint, "num_cpus": 0.25, "max_batch_size": 8,
                                     "batch_wait_timeout_s": 0.05, "max_new_tokens": 64,
                                     "autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    deployed = serve.deploy(args, name="lm", route_prefix="/lm", **http_options)
    yield deployed["url"]
    ray_serve.shutdown()


def generate(url, **body):
    return http("POST", f"{url}/v1/generate", json.dumps(body).encode(), {"Content-Type": "application/json"})


def test_the_endpoint_generates_what_offline_generation_does_batched_or_not(runs, endpoint, capsys):
    offline = TextGenerator(read_checkpoint(runs["ddp"].checkpoint))
    prompts = ["def ", "import os\n", "class A:\n    def __init__(self", "x"]  # different lengths: left padding
    expected = [offline.generate([(p.encode(), lm.Sampling(max_new_tokens=24, temperature=0, seed=None))])[0]
                for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:  # together: the replica batches them
        answers = list(pool.map(lambda p: generate(endpoint, prompt=p, max_new_tokens=24, temperature=0), prompts))
    for (status, _, body), want in zip(answers, expected):
        assert status == 200, body
        assert body["completion"] == want.decode(errors="replace") and body["num_new_tokens"] == 24
    from ray import serve  # Python in the cluster, through a DeploymentHandle: the same texts, batched alike

    handle = serve.get_app_handle("lm")
    calls = [handle.generate_text.remote({"prompt": p, "max_new_tokens": 24, "temperature": 0}) for p in prompts]
    assert [call.result(timeout_s=120)["completion"] for call in calls] == [a[2]["completion"] for a in answers]
    seeded = [generate(endpoint, prompt="def ", max_new_tokens=30, seed=7)[2]["completion"] for _ in range(2)]
    assert seeded[0] == seeded[1]  # the same seed gives the same text
    status, _, body = http("GET", f"{endpoint}/v1/model")
    assert status == 200 and body["family"] == "gpt" and body["route"] == "/v1/generate"
    # OpenAI's completions, as its clients send them: the same text, in its shape; a stop sequence cuts it
    name = offline.info["name"]
    body = {"model": name, "prompt": "def ", "max_tokens": 24, "temperature": 0}
    status, _, answer = http("POST", f"{endpoint}/v1/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
    assert status == 200 and answer["choices"][0]["text"] == expected[0].decode(errors="replace"), answer
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 24, "total_tokens": 28}
    stop = expected[0][5:7].decode(errors="replace")
    cut = http("POST", f"{endpoint}/v1/completions", json.dumps({**body, "stop": stop}).encode(),
               {"Content-Type": "application/json"})[2]["choices"][0]
    first = expected[0].find(stop.encode())
    assert first >= 0 and cut == {"index": 0, "text": expected[0][:first].decode(errors="replace"), "logprobs": None,
                                  "finish_reason": "stop"}
    assert http("GET", f"{endpoint}/v1/models")[2]["data"][0]["id"] == name
    status, _, answer = http("POST", f"{endpoint}/v1/completions", json.dumps({**body, "n": 2}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 400 and answer["error"]["type"] == "invalid_request_error" and "n 2" in answer["error"]["message"]
    # streamed, as OpenAI's clients ask with stream=True: the same text, in events that come as it is made
    sent, events = stream_completion(endpoint, {**body, "max_tokens": 64, "stream": True})
    chunks = [json.loads(e[6:]) for _, e in events[:-1]]
    assert events[-1][1] == "data: [DONE]" and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks) == offline.generate(
        [(b"def ", lm.Sampling(max_new_tokens=64, temperature=0, seed=None))])[0].decode(errors="replace")
    first, done = events[0][0], events[-1][0]
    assert done - first > 0.3 * (done - sent), (sent, first, done)  # not held back until the end (HAProxy)
    _, events = stream_completion(endpoint, {**body, "stop": stop, "stream": True})
    assert "".join(json.loads(e[6:])["choices"][0]["text"] for _, e in events[:-1]) == cut["text"]
    # `orchestrator generate URL` shows the text as it comes (streamed); --json answers as /v1/generate
    assert main(["generate", endpoint, "--prompt", "def ", "--max-new-tokens", "24", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == "def " + expected[0].decode(errors="replace") + "\n"
    assert main(["generate", endpoint, "--prompt", "def ", "--max-new-tokens", "24", "--temperature", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["completion"] == expected[0].decode(errors="replace")
    assert main(["generate", endpoint, "--prompt", "def ", "--max-new-tokens", "65"]) == 2  # over the endpoint's 64
    printed = capsys.readouterr()
    assert printed.out == "" and "answered 400" in printed.err and "from 1 to 64" in printed.err


def stream_completion(url: str, body: dict) -> tuple[float, list[tuple[float, str]]]:
    """POST /v1/completions read as a stream: when it was sent, and each server-sent event with when it came."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        sent = time.monotonic()
        conn.request("POST", f"{parts.path}/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
        events = [(time.monotonic(), line.decode().strip()) for line in response if line.strip()]
    finally:
        conn.close()
    return sent, events


@pytest.mark.parametrize("body, status, code", [
    ({"prompt": ""}, 422, "invalid_prompt"),
    ({"prompt": "x", "max_new_tokens": 65}, 422, "invalid_max_new_tokens"),  # over the endpoint's limit of 64
    ({"prompt": "x", "temperature": "hot"}, 422, "invalid_temperature"),
    ({"prompt": "x", "top_k": 0}, 422, "invalid_top_k"),
    ({"prompt": "x", "stream": True}, 422, "unknown_field"),
])
def test_bad_generate_requests_get_a_4xx_that_names_the_field(endpoint, body, status, code):
    got_status, _, got = generate(endpoint, **body)
    assert (got_status, got["error"]["code"]) == (status, code)


def test_predict_on_a_language_model_points_to_generate(endpoint):
    status, _, body = http("POST", f"{endpoint}/v1/predict", b'{"instances": [[1]]}',
                           {"Content-Type": "application/json"})
    assert status == 404 and "/v1/generate" in body["error"]["message"]
