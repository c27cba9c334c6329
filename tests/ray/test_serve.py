"""The Serve endpoint over real HTTP on loopback, on the shared local Ray: one Serve instance,
one app per behaviour under test, each on its own route prefix."""

import contextlib
import gzip
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from orchestrator import data, datafiles
from orchestrator.config import ServeArgs, load_config
from orchestrator.errors import ConfigError, RequestError
from orchestrator.evaluate import evaluate_checkpoint
from orchestrator.predictor import Predictor
from orchestrator.train import train
from tests.conftest import ROOT, form, free_port, http, png_bytes

pytestmark = pytest.mark.ray
JSON = {"Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}
SMALL = {"num_cpus": 0.25, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}  # 2 CPUs hold every app


@pytest.fixture(scope="module")
def checkpoints(ray_cluster, tmp_path_factory):
    """Three epochs of the digits MLP: three checkpoints that give different answers."""
    tmp = tmp_path_factory.mktemp("serve-runs")
    result = train(load_config(ROOT / "jobs" / "digits-mlp.yaml",
                               [f"storage.path={tmp}", "train.run_name=m", "train.epochs=3", "train.num_to_keep=3"]))
    return [str(tmp / "m" / f"epoch-000{i}") for i in (1, 2, 3)], result


@pytest.fixture(scope="module")
def serve_http(ray_cluster):
    from ray import serve

    port = free_port()
    # 5 s: the timeout test's batch waits 8 s; every other request here answers well within it
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 5})
    yield {"host": "127.0.0.1", "port": port, "request_timeout_s": 5}
    serve.shutdown()


@pytest.fixture(scope="module")
def test_inputs(checkpoints):
    ckpt = Predictor.load(checkpoints[0][-1])
    cfg = load_config(ROOT / "jobs" / "digits-mlp.yaml")
    splits = data.load_splits(cfg.data, cfg.seed)
    x, y = splits.arrays["test"]
    assert tuple(x.shape[1:]) == ckpt.input_shape
    return x, y


def zeros(n: int) -> list:
    return np.zeros((n, 1, 8, 8)).tolist()  # n inputs of the digits models' shape


def one_input_with(value) -> bytes:
    x = zeros(1)
    x[0][0][0][0] = value
    return json.dumps({"instances": x}).encode()  # NaN and Infinity as JSON's common extensions


@pytest.fixture(autouse=True)
def delete_apps():
    """Each test's apps go when it ends: 2 CPUs hold only a few replicas at once."""
    yield
    from ray import serve

    for name in DEPLOYED:
        serve.delete(name)
    DEPLOYED.clear()


DEPLOYED: set[str] = set()


def deploy(name, checkpoint, serve_http, **settings):
    from orchestrator import serve

    DEPLOYED.add(name)
    args = ServeArgs.model_validate({"checkpoint": checkpoint, **SMALL, **settings})
    return serve.deploy(args, name=name, route_prefix=f"/{name}", **serve_http)


def predict(url, instances, headers=JSON):
    return http("POST", f"{url}/v1/predict", json.dumps({"instances": instances}).encode(), headers)


@contextlib.contextmanager
def steady_load(url, clients: int = 4, retries: int = 0):
    """Clients sending requests back to back while the block runs, each retried up to `retries` times
    with the documented client policy: (answers per model version, failures, {"retries": n})."""
    from orchestrator.client import post_json

    stop, seen, failures, stats = threading.Event(), Counter(), [], {}

    def client():
        while not stop.is_set():
            try:
                status, body = post_json(f"{url}/v1/predict", {"instances": zeros(1)}, retries=retries, stats=stats)
            except Exception as e:  # noqa: BLE001 (a request that raised failed too; a dead thread would hide it)
                status, body = None, repr(e)
            if status == 200:
                seen[body["model"]["version"]] += 1
            else:
                failures.append((status, body))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield seen, failures, stats
    finally:
        stop.set()
        for t in threads:
            t.join()


def running_replicas(name) -> list[dict]:
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"][name]
    return sorted((r for d in app["deployments"].values() for r in d["replicas"] if r["state"] == "RUNNING"),
                  key=lambda r: r["replica_id"])


def deployment_config(name) -> dict:
    from ray.serve.context import _get_global_client

    (deployment,) = _get_global_client().get_serve_details()["applications"][name]["deployments"].values()
    return deployment["deployment_config"]


def replicas(name) -> list[tuple[str, int]]:
    return [(r["replica_id"], r["pid"]) for r in running_replicas(name)]


def wait_for(condition, timeout_s: float = 60) -> bool:
    deadline = time.time() + timeout_s
    while not condition() and time.time() < deadline:
        time.sleep(0.5)
    return condition()


def test_predictions_equal_offline_prediction_and_evaluate(checkpoints, serve_http, test_inputs):
    _, trained = checkpoints
    served = trained.checkpoint  # the run's best epoch, whose test metrics train() reported
    x, y = test_inputs
    url = deploy("main", served, serve_http)["url"]
    labels, probs = [], []
    for chunk in np.array_split(x, 4):
        status, headers, body = predict(url, chunk.tolist(), {**JSON, "Origin": "https://app.example.com"})
        assert status == 200, body
        assert "access-control-allow-origin" not in headers  # no cors_origins: no web page may read it
        labels += [p["class_index"] for p in body["predictions"]]
        probs += [p["probabilities"] for p in body["predictions"]]
    offline = Predictor.load(served)
    local = offline.predict(x)
    assert labels == local.argmax(axis=1).tolist()
    np.testing.assert_allclose(probs, local, atol=1e-6)
    accuracy = float(np.mean(np.array(labels) == y))
    assert accuracy == pytest.approx(evaluate_checkpoint(served)["metrics"]["test_accuracy"], abs=1e-12)
    assert accuracy == pytest.approx(trained.metrics["test_accuracy"], abs=1e-12)

    # the bodies other clients send: an image file (TorchServe's), a CSV row of pixels (MLflow's text/csv)
    image = png_bytes((x[0, 0] * 255 / 16).astype(np.uint8))  # digits' pixels are 0..16
    for method, body, content_type in [("POST", image, "image/png"), ("PUT", image, ""),  # curl -T, TorchServe's
                                       ("POST", ",".join(map(str, x[0].ravel())).encode(), "text/csv")]:
        status, _, answer = http(method, f"{url}/v1/predict", body, {"Content-Type": content_type} if content_type
                                 else {})
        assert status == 200, answer
        np.testing.assert_allclose(answer["predictions"][0]["probabilities"],
                                   offline.predict(offline.decode(body, content_type))[0], atol=1e-6)
    assert answer["predictions"][0]["label"] == str(labels[0])  # the CSV row is the first test input
    parts, content_type = form(("file", "digit.png", None, image), ("file", "digits.csv", None, body))  # curl -F
    status, _, both = http("POST", f"{url}/v1/predict", parts, {"Content-Type": content_type})
    assert status == 200, both
    alone = http("POST", f"{url}/v1/predict", image, {"Content-Type": "image/png"})[2]["predictions"][0]
    np.testing.assert_allclose([p["probabilities"] for p in both["predictions"]],
                               [alone["probabilities"], answer["predictions"][0]["probabilities"]], atol=1e-6)

    # the Open Inference Protocol (KServe v2: Triton's and MLServer's clients): the same answers
    name = offline.info["name"]
    v2 = {"id": "7", "inputs": [{"name": "input", "shape": [100, 64], "datatype": "FP32",
                                 "data": x[:100].reshape(100, -1).tolist()}]}
    status, _, answer = http("POST", f"{url}/v2/models/{name}/infer", json.dumps(v2).encode(), JSON)
    assert status == 200 and answer["id"] == "7" and answer["model_version"] == offline.version, answer
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["class_index"]["data"] == labels[:100] and out["probabilities"]["shape"] == [100, 10]
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (100, 10)), probs[:100], atol=1e-6)
    version = f"{url}/v2/models/{name}/versions/{offline.version}"
    assert http("POST", f"{version}/infer", json.dumps(v2).encode(), JSON)[0] == 200
    assert http("GET", version)[2]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert http("GET", f"{url}/v2/health/ready")[2] == {"ready": True}
    assert http("GET", f"{url}/v2/health/live")[0] == 200
    assert http("GET", f"{url}/v2/models/{name}/ready")[2] == {"name": name, "ready": True}
    status, _, answer = http("POST", f"{url}/v2/models/other/infer", json.dumps(v2).encode(), JSON)
    assert status == 404 and f"this endpoint serves {name!r}" in answer["error"], answer  # the protocol's error shape

    # KServe's v1 protocol and TF Serving's REST API, at their clients' paths: /v1/predict's answer
    status, _, answer = http("POST", f"{url}/v1/models/{name}:predict",
                             json.dumps({"instances": x[:8].tolist()}).encode(), JSON)
    assert status == 200, answer
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], probs[:8], atol=1e-6)
    assert http("GET", f"{url}/v1/models/{name}")[2] == {"name": name, "ready": True}

    # Python in the cluster, through a DeploymentHandle (Serve's model composition): the same answers, no HTTP
    from ray import serve

    handle = serve.get_app_handle("main")
    calls = [handle.predict_inputs.remote(chunk) for chunk in np.array_split(x[:100], 4)]  # at once: batched
    answers = [p for call in calls for p in call.result(timeout_s=60)["predictions"]]
    np.testing.assert_allclose([p["probabilities"] for p in answers], probs[:100], atol=1e-6)
    with pytest.raises(RequestError) as refused:
        handle.predict_inputs.remote([[1.0, 2.0]]).result(timeout_s=60)
    assert (refused.value.status, refused.value.code) == (422, "wrong_shape") and "[1, 8, 8]" in refused.value.message

    status, _, info = http("GET", f"{url}/v1/model")
    assert status == 200 and info["checkpoint"] == served and info["version"] == offline.version
    assert info["input"]["content_types"].keys() == {"application/json", "text/csv", "image/*", "multipart/form-data"}
    assert info["input"]["shape"] == list(offline.input_shape) and info["metrics"]["epoch"] == int(served[-4:])
    assert http("GET", f"{url}/healthz")[0] == 200 and http("GET", f"{url}/readyz")[2]["ready"] is True
    assert http("GET", f"{url}/docs")[0] == 200 and "/v1/predict" in http("GET", f"{url}/openapi.json")[2]["paths"]


def test_a_table_with_text_columns_trains_and_serves_rows_as_training_read_them(serve_http, tmp_path):
    """A CSV as people export them: numbers (blank cells in one column), a text column of categories (blank
    cells too), dates and amounts written as a spreadsheet writes them (03/15/2025 14:30, "$1,234.50"), string
    labels. Trained on 2 workers (DDP), served by column name (a blank cell as null, a date and an amount as
    the file writes them), evaluated on other rows: one encoding throughout."""
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import evaluate_on_data
    from orchestrator.pipeline import smoke_request

    rng = np.random.default_rng(0)
    size, city = rng.normal(size=1100).round(3), rng.choice(["Lyon", "Nice", "Paris", ""], 1100)
    reading = np.where(rng.random(1100) < 0.2, np.nan, rng.normal(size=1100).round(3))  # a sensor that misses some
    when = np.datetime64("2025-01-01T00:00") + rng.integers(0, 730 * 24 * 60, 1100).astype("timedelta64[m]")
    price = rng.uniform(0, 5000, 1100)
    label = np.where((size > 0) ^ (city == "Nice"), "yes", "no")  # the class needs the text column
    rows = [{"size": float(s), "reading": None if r != r else float(r), "city": str(c),
             "when": w.item().strftime("%m/%d/%Y %H:%M"), "price": f"${p:,.2f}", "label": str(lab)}
            for s, r, c, w, p, lab in zip(size, reading, city, when, price, label, strict=True)]
    for name, part in (("train.csv", rows[:1000]), ("holdout.csv", rows[1000:])):
        (tmp_path / name).write_text("size,reading,city,when,price,label\n" + "".join(
            f"{r['size']},{'' if r['reading'] is None else r['reading']},{r['city']},{r['when']},\"{r['price']}\","
            f"{r['label']}\n" for r in part))
    cfg = config_from_dict({
        "name": "table", "data": {"name": "files", "path": str(tmp_path / "train.csv")},
        "model": {"name": "mlp", "hidden_sizes": [32]}, "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 15, "num_workers": 2, "batch_size_per_worker": 32}, "storage": {"path": str(tmp_path)}})
    result = train(cfg)
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    # the class is size and city: what the model relies on, by shuffling each column on the test split
    relied = {r["column"]: r["accuracy_drop"] for r in result.importance}
    assert relied.keys() == {"size", "reading", "city", "when", "price"} and min(relied["size"], relied["city"]) > 0.2
    assert max(relied["reading"], relied["when"], relied["price"]) < 0.1
    assert (Path(result.report).parent / "importance.png").read_bytes().startswith(b"\x89PNG")
    url = deploy("table", result.checkpoint, serve_http)["url"]
    status, _, body = predict(url, rows[1000:1100])  # the label column is ignored
    assert status == 200, body
    status, _, as_csv = http("POST", f"{url}/v1/predict", (tmp_path / "holdout.csv").read_bytes(),
                             {"Content-Type": "text/csv"})  # the file as it is: MLflow's text/csv
    assert status == 200 and as_csv["predictions"] == body["predictions"], as_csv
    columns = {"size": "FP64", "reading": "FP64", "city": "BYTES", "when": "BYTES", "price": "BYTES"}
    v2 = {"inputs": [{"name": c, "shape": [100], "datatype": kind, "data": [r[c] for r in rows[1000:1100]]}
                     for c, kind in columns.items()]}  # a tensor per column, as MLServer's pandas codec sends a frame
    status, _, answer = http("POST", f"{url}/v2/models/table/infer", json.dumps(v2).encode(), JSON)
    assert status == 200, answer
    probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]
    np.testing.assert_allclose(np.reshape(probabilities, (100, -1)), [p["probabilities"] for p in body["predictions"]],
                               atol=1e-6)
    offline = Predictor.load(result.checkpoint)
    local = offline.predict(offline.validate([{k: r[k] for k in ("city", "reading", "size", "when", "price")}
                                              for r in rows[1000:1100]]))
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], local, atol=1e-6)
    answers = zip(body["predictions"], rows[1000:1100], strict=True)
    served_accuracy = np.mean([p["label"] == r["label"] for p, r in answers])
    assert evaluate_on_data(result.checkpoint, str(tmp_path / "holdout.csv"))["metrics"]["accuracy"] == \
        pytest.approx(served_accuracy, abs=1e-12)
    described = http("GET", f"{url}/v1/model")[2]["input"]
    assert described["categories"] == {"city": ["", "Lyon", "Nice", "Paris"]} and described["dates"] == ["when"]
    assert described["written_forms"] == {"when": "%m/%d/%Y %H:%M", "price": "$#"}
    train_readings = [r["reading"] for r in rows[:1000] if r["reading"] is not None]  # the split's are among them
    assert described["blank_columns"] == ["reading"] and \
        min(train_readings) < described["blank_fill"]["reading"] < max(train_readings)
    good = {"size": 1.0, "reading": 0.5, "city": "Nice", "when": "2026-01-05", "price": 1234.5}  # ISO, a number
    assert predict(url, [good])[0] == 200
    for bad, words in [({"city": 3}, "'city' takes text"), ({"size": None}, "'size' takes a number, got null"),
                       ({"when": "next week"}, "'when': 'next week' is not a date: send ISO 8601"),
                       ({"price": "€5"}, "'price': '€5' is not a number written as '$1,234.5'")]:
        status, _, body = predict(url, [{**good, **bad}])
        assert status == 422 and words in body["error"]["message"], body
    # orchestrator run's smoke request sends test rows as lists, a blank cell as null
    test_x, test_y = data.load_splits(cfg.data, cfg.seed).arrays["test"]
    blank = np.isnan(test_x).any(axis=1)
    smoke = smoke_request(url, (test_x[blank], test_y[blank]), ServeArgs(checkpoint=result.checkpoint))
    assert smoke["status"] == 200 and smoke["correct"] >= 3, smoke


def test_a_column_of_free_text_trains_a_classifier_of_text_that_serves_strings(serve_http, tmp_path):
    """Text classification: reviews (a CSV of text and a label) read byte by byte by a GRU trained on 2 workers
    (DDP), served as strings, evaluated on other rows: the same bytes throughout."""
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import evaluate_on_data

    rng = np.random.default_rng(0)
    filler = ["the", "plot", "was", "actors", "and", "film", "quite", "really", "ending", "music"]
    verdicts = {"pos": ["great", "loved", "superb"], "neg": ["awful", "boring", "dull"]}
    rows = []
    for i in range(600):
        label = ("pos", "neg")[i % 2]
        words = list(rng.choice(filler, 4)) + [str(rng.choice(verdicts[label]))]
        rng.shuffle(words)  # the verdict anywhere in the text
        rows.append({"review": " ".join(words).capitalize() + ".", "sentiment": label})
    for name, part in (("train.csv", rows[:500]), ("holdout.csv", rows[500:])):
        (tmp_path / name).write_text("id,review,sentiment\n" + "".join(f'{i},"{r["review"]}",{r["sentiment"]}\n'
                                                                      for i, r in enumerate(part)))
    result = train(config_from_dict({
        "name": "reviews", "data": {"name": "files", "path": str(tmp_path / "train.csv"), "label_column": "sentiment",
                                    "text_column": "review", "text_bytes": 64},
        "model": {"name": "rnn", "cell": "gru", "hidden_size": 32}, "optim": {"name": "adamw", "lr": 0.005},
        "train": {"epochs": 10, "num_workers": 2, "batch_size_per_worker": 16}, "storage": {"path": str(tmp_path)}}))
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    url = deploy("reviews", result.checkpoint, serve_http)["url"]
    status, _, body = predict(url, [r["review"] for r in rows[500:]])
    assert status == 200, body
    offline = Predictor.load(result.checkpoint)
    local = offline.predict(offline.validate([{"review": r["review"]} for r in rows[500:]]))
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], local, atol=1e-6)
    served_accuracy = np.mean([p["label"] == r["sentiment"] for p, r in zip(body["predictions"], rows[500:],
                                                                             strict=True)])
    assert served_accuracy >= 0.9
    assert evaluate_on_data(result.checkpoint, str(tmp_path / "holdout.csv"))["metrics"]["accuracy"] == \
        pytest.approx(served_accuracy, abs=1e-12)
    assert http("GET", f"{url}/v1/model")[2]["input"]["text_column"] == "review"
    # orchestrator run's smoke request sends test rows' bytes back as the texts they were
    from orchestrator.byte_text import encode
    from orchestrator.pipeline import smoke_request

    labels = offline.labels
    smoke = smoke_request(url, (encode([r["review"] for r in rows[500:]], 64),
                                np.array([labels.index(r["sentiment"]) for r in rows[500:]])),
                          ServeArgs(checkpoint=result.checkpoint), texts=True)
    assert smoke["status"] == 200 and smoke["correct"] >= 3, smoke
    status, _, body = predict(url, [{"review": 3}])
    assert status == 422 and "this model classifies text ('review')" in body["error"]["message"]


def test_a_text_beside_a_tables_columns_trains_and_serves_rows_by_column(serve_http, tmp_path):
    """A review (a title and a text: two columns read as one text), its stars and its shop: the class (whether
    the customer came back) follows the review's verdict where the stars are 3 or more, and the opposite below:
    neither the text nor the stars tell it alone. Trained on 2 workers (DDP), served by column name, evaluated
    on other rows: the same features."""
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import evaluate_on_data
    from orchestrator.pipeline import smoke_request

    rng = np.random.default_rng(0)
    verdicts = {True: ["great", "loved it", "superb"], False: ["awful", "boring", "dull"]}
    lines = ["id,title,review,stars,shop,price,returned"]
    for i in range(800):
        good, stars = bool(i % 2), int(rng.integers(1, 6))
        price = "" if rng.random() < 0.1 else f"{rng.uniform(5, 50):.2f}"  # blank now and then: filled
        title, review = rng.choice(["The", "This"]), f"one was {rng.choice(verdicts[good])}."
        returned = "no" if good == (stars >= 3) else "yes"
        lines.append(f"{i},{title},{review},{stars},{rng.choice(['north', 'south'])},{price},{returned}")
    (tmp_path / "train.csv").write_text("\n".join(lines[:651]) + "\n")
    (tmp_path / "holdout.csv").write_text("\n".join(lines[:1] + lines[651:]) + "\n")
    cfg = config_from_dict({
        "name": "returns", "data": {"name": "files", "path": str(tmp_path / "train.csv"), "label_column": "returned",
                                    "text_column": ["title", "review"], "text_bytes": 24,
                                    "feature_columns": ["stars", "shop", "price"]},
        "model": {"name": "rnn", "cell": "gru", "hidden_size": 32}, "optim": {"name": "adamw", "lr": 0.01},
        "train": {"epochs": 12, "num_workers": 2, "batch_size_per_worker": 16}, "storage": {"path": str(tmp_path)}})
    result = train(cfg)
    assert result.metrics["test_accuracy"] >= 0.95, result.metrics
    url = deploy("returns", result.checkpoint, serve_http)["url"]
    rows = datafiles.read_rows(str(tmp_path / "holdout.csv"))  # with their id and label, as a client has them
    status, _, body = predict(url, rows)
    assert status == 200, body
    offline = Predictor.load(result.checkpoint)
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]],
                               offline.predict(offline.validate(rows)), atol=1e-6)
    served_accuracy = np.mean([p["label"] == r["returned"] for p, r in zip(body["predictions"], rows, strict=True)])
    assert served_accuracy >= 0.95
    assert evaluate_on_data(result.checkpoint, str(tmp_path / "holdout.csv"))["metrics"]["accuracy"] == \
        pytest.approx(served_accuracy, abs=1e-12)
    described = http("GET", f"{url}/v1/model")[2]["input"]
    assert (described["text_column"], described["text_parts"]) == ("title+review", ["title", "review"])
    assert described["columns"] == ["title+review", "stars", "shop", "price"]
    # orchestrator run's smoke request sends test rows as their features, a blank price as null
    test_x, test_y = data.load_splits(cfg.data, cfg.seed).arrays["test"]
    smoke = smoke_request(url, (test_x, test_y), ServeArgs(checkpoint=result.checkpoint))
    assert smoke["status"] == 200 and smoke["correct"] >= 3, smoke
    status, _, body = predict(url, [{**rows[0], "review": 3}])
    assert status == 422 and "instance 0: 'review' takes text, got 3" in body["error"]["message"]


def test_batched_equals_unbatched(checkpoints, serve_http, test_inputs):
    x = test_inputs[0][:48]
    batched = deploy("batched", checkpoints[0][-1], serve_http, max_batch_size=16, batch_wait_timeout_s=0.05)["url"]
    single = deploy("single", checkpoints[0][-1], serve_http, max_batch_size=1)["url"]
    with ThreadPoolExecutor(16) as pool:  # concurrent one-input requests: merged into batches
        together = list(pool.map(lambda row: predict(batched, [row.tolist()]), x))
    alone = [predict(single, [row.tolist()]) for row in x]
    assert all(r[0] == 200 for r in together + alone)
    a = np.array([r[2]["predictions"][0]["probabilities"] for r in together])
    b = np.array([r[2]["predictions"][0]["probabilities"] for r in alone])
    assert (a.argmax(1) == b.argmax(1)).all()
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.reliability
def test_every_bad_request_gets_its_4xx_and_the_replica_survives(checkpoints, serve_http):
    url = deploy("strict", checkpoints[0][-1], serve_http, max_instances=4, max_body_bytes=4096)["url"]
    before = replicas("strict")
    good = zeros(1)
    row = [0.0] * 8
    cases = {
        "not JSON": (b"{instances: oops", JSON, 400, "invalid_json"),
        "nested too deeply": (b"[" * 2000 + b"]" * 2000, JSON, 400, "invalid_json"),  # the parser's RecursionError
        "wrong content type": (json.dumps({"instances": good}).encode(), {"Content-Type": "text/plain"}, 415,
                               "unsupported_media_type"),
        "no content type, no JSON": (b"a,b\n", {}, 415, "unsupported_media_type"),
        "an image that is not": (b"GIF89a...", {"Content-Type": "image/png"}, 422, "invalid_image"),
        "a CSV of text": (b"a,b\nc,d\n", {"Content-Type": "text/csv"}, 422, "wrong_type"),
        "no instances key": (b'{"rows": []}', JSON, 400, "missing_instances"),
        "instances not a list": (b'{"instances": 3}', JSON, 422, "invalid_instances"),
        "wrong shape": (json.dumps({"instances": [[1.0] * 63]}).encode(), JSON, 422, "wrong_shape"),
        "ragged": (json.dumps({"instances": [[[row] * 8], [[row] * 7]]}).encode(), JSON, 422, "wrong_shape"),
        "strings": (json.dumps({"instances": [[[["a"] * 8] * 8]]}).encode(), JSON, 422, "wrong_type"),
        "booleans": (json.dumps({"instances": [[[[True] * 8] * 8]]}).encode(), JSON, 422, "wrong_type"),
        "null": (one_input_with(None), JSON, 422, "wrong_type"),
        "NaN": (one_input_with(float("nan")), JSON, 422, "not_finite"),
        "Infinity": (one_input_with(float("-inf")), JSON, 422, "not_finite"),
        "beyond float32": (one_input_with(1e39), JSON, 422, "not_finite"),
        "empty": (b'{"instances": []}', JSON, 422, "no_instances"),
        "too many instances": (json.dumps({"instances": good * 5}).encode(), JSON, 422, "too_many_instances"),
        "oversized body": (b" " * 5000, JSON, 413, "body_too_large"),
        "oversized, chunked": ((b" " * 1000 for _ in range(6)), JSON, 413, "body_too_large"),
        "oversized once gunzipped": (gzip.compress(b" " * 100_000), GZIP, 413, "body_too_large"),
        "gzip that is not": (json.dumps({"instances": good}).encode(), GZIP, 400, "invalid_gzip"),
        "another encoding": (json.dumps({"instances": good}).encode(), {**JSON, "Content-Encoding": "br"}, 415,
                             "unsupported_encoding"),
    }
    for case, (body, headers, status, code) in cases.items():
        got, _, answer = http("POST", f"{url}/v1/predict", body, headers)
        assert (got, answer["error"]["code"]) == (status, code), f"{case}: {got} {answer}"
        assert answer["error"]["message"], case
    # FastAPI's own answers take the same error shape; probes also answer HEAD
    status, headers, answer = http("GET", f"{url}/v1/predict")
    assert (status, answer["error"]["code"], headers["allow"]) == (405, "method_not_allowed", "POST, PUT")
    assert "use POST" in answer["error"]["message"]
    assert http("GET", f"{url}/v2/predict")[2]["error"]["code"] == "not_found"
    assert http("HEAD", f"{url}/healthz")[0] == 200 and http("HEAD", f"{url}/readyz")[0] == 200
    assert predict(url, good)[0] == 200
    flat = [[0.0] * 64]  # a flat row of the input's size fills it row-major
    assert http("POST", f"{url}/v1/predict", json.dumps({"instances": flat}).encode(), JSON)[0] == 200
    zipped = http("POST", f"{url}/v1/predict", gzip.compress(json.dumps({"instances": good}).encode()), GZIP)
    assert zipped[0] == 200 and zipped[2]["predictions"] == predict(url, good)[2]["predictions"]
    assert replicas("strict") == before  # same replica, same process: nothing restarted


def test_the_predict_command_sends_a_file_in_requests_the_endpoint_takes(checkpoints, serve_http, tmp_path, capsys):
    from orchestrator.cli import main

    url = deploy("strict", checkpoints[0][-1], serve_http, max_instances=4, max_body_bytes=4096)["url"]
    inputs = np.random.default_rng(0).normal(size=(11, 1, 8, 8)).round(2).tolist()  # 11 > 4, and > 4096 bytes
    (tmp_path / "in.json").write_text(json.dumps(inputs))
    assert main(["predict", url, "--input", str(tmp_path / "in.json"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    offline = Predictor.load(checkpoints[0][-1]).predict(np.asarray(inputs, dtype=np.float32))
    assert [p["class_index"] for p in answer["predictions"]] == offline.argmax(1).tolist()  # all, in order
    # image files, of any size: sent as they are (base64), decoded by the model to its input shape [1, 8, 8]
    from PIL import Image

    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 17, (16, 16)).astype(np.uint8)).save(
            tmp_path / "images" / f"{i}.png")
    assert main(["predict", url, "--input", str(tmp_path / "images"), "--json"]) == 0
    remote = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["predict", checkpoints[0][-1], "--input", str(tmp_path / "images"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert remote["inputs"] == local["inputs"] and len(remote["inputs"]) == 3
    np.testing.assert_allclose([p["probabilities"] for p in remote["predictions"]],
                               [p["probabilities"] for p in local["predictions"]], atol=1e-6)
    # to a file: each image's name beside its prediction, in 4-image requests as above
    assert main(["predict", url, "--input", str(tmp_path / "images"), "--output", str(tmp_path / "scored.csv")]) == 0
    scored = (tmp_path / "scored.csv").read_text().splitlines()
    assert scored[0].startswith("file,prediction,probability,probability_0,") and len(scored) == 4
    assert [row.split(",")[:2] for row in scored[1:]] == [[name, p["label"]] for name, p in
                                                          zip(remote["inputs"], remote["predictions"], strict=True)]


@pytest.mark.reliability
def test_api_keys_401_403_never_logged_and_probes_stay_open(checkpoints, serve_http, tmp_path, ray_cluster):
    keys = tmp_path / "keys"
    keys.write_text("# one per line\nfirst-key-0123456789\nsecond-key-abcdef\n")
    app = "https://app.example.com"
    url = deploy("locked", checkpoints[0][-1], serve_http, auth="required", api_keys_file=str(keys),
                 cors_origins=[app])["url"]
    x = zeros(1)
    status, headers, body = predict(url, x)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and body["error"]["code"] == "missing_api_key"
    assert predict(url, x, {**JSON, "Authorization": "Bearer wrong"})[0] == 403
    assert predict(url, x, {**JSON, "Authorization": "Basic second-key-abcdef"})[0] == 401
    assert predict(url, x, {**JSON, "Authorization": "Bearer second-key-abcdef"})[0] == 200
    assert http("GET", f"{url}/v1/model")[0] == 401
    assert http("GET", f"{url}/v1/model", headers={"Authorization": "Bearer first-key-0123456789"})[0] == 200
    assert http("GET", f"{url}/healthz")[0] == 200 and http("GET", f"{url}/readyz")[0] == 200
    time.sleep(1)  # Ray's log files catch up
    logs = Path(ray_cluster._private.worker._global_node.get_logs_dir_path())
    leaked = [f.name for f in logs.rglob("*") if f.is_file() and any(
        k in f.read_bytes() for k in (b"first-key-0123456789", b"second-key-abcdef"))]
    print(f"api keys: searched {sum(1 for f in logs.rglob('*') if f.is_file())} Ray log files, keys in {leaked}")
    assert leaked == []  # neither the keys nor the requests that carried them are logged

    # a web page of an allowed origin: its preflight, sent without the key, passes; its call needs the key
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    status, headers, _ = http("OPTIONS", f"{url}/v1/predict", headers={"Origin": app, **preflight})
    assert status == 200 and headers["access-control-allow-origin"] == app
    assert "authorization" in headers["access-control-allow-headers"].lower()
    status, headers, _ = predict(url, x, {**JSON, "Origin": app, "Authorization": "Bearer first-key-0123456789"})
    assert status == 200 and headers["access-control-allow-origin"] == app
    status, headers, _ = predict(url, x, {**JSON, "Origin": app})
    assert status == 401 and headers["access-control-allow-origin"] == app  # the page can read why
    other = {"Origin": "https://elsewhere.example", **preflight}
    assert http("OPTIONS", f"{url}/v1/predict", headers=other)[0] == 400
    # a new origin list applies in place, as every setting does
    deploy("locked", checkpoints[0][-1], serve_http, auth="required", api_keys_file=str(keys),
           cors_origins=["https://elsewhere.example"])
    assert http("OPTIONS", f"{url}/v1/predict", headers=other)[0] == 200
    assert http("OPTIONS", f"{url}/v1/predict", headers={"Origin": app, **preflight})[0] == 400

    (tmp_path / "empty").write_text("# no keys yet\n")
    with pytest.raises(ConfigError, match="no API keys"):
        deploy("nokeys", checkpoints[0][-1], serve_http, auth="required", api_keys_file=str(tmp_path / "empty"))


@pytest.mark.reliability
def test_overload_sheds_with_503_and_retry_after_never_500(checkpoints, serve_http):
    # one request at a time, two waiting; each holds its slot for a 0.3 s batch wait
    url = deploy("tight", checkpoints[0][-1], serve_http, max_ongoing_requests=1, max_queued_requests=2,
                 max_batch_size=2, batch_wait_timeout_s=0.3, retry_after_s=2)["url"]
    before, x = replicas("tight"), zeros(1)
    with ThreadPoolExecutor(24) as pool:  # 24 at once against 3 places: 8x capacity
        answers = list(pool.map(lambda _: predict(url, x), range(48)))
    statuses = Counter(a[0] for a in answers)
    print("overload:", dict(statuses))
    assert set(statuses) <= {200, 503} and statuses[200] >= 1 and statuses[503] >= 1
    assert all(a[1].get("retry-after") == "2" for a in answers if a[0] == 503)
    assert replicas("tight") == before  # shedding load restarted no replica


@pytest.mark.reliability
def test_a_request_past_the_timeout_gets_408_and_other_requests_are_unaffected(checkpoints, serve_http):
    # a lone request waits 8 s for a batch of 8 to fill, past the 5 s request timeout
    slow = deploy("slow", checkpoints[0][-1], serve_http, max_batch_size=8, batch_wait_timeout_s=8)["url"]
    quick = deploy("quick", checkpoints[0][-1], serve_http)["url"]
    before = replicas("slow")
    with ThreadPoolExecutor(8) as pool:
        started = time.time()
        lone = pool.submit(predict, slow, zeros(1))
        meanwhile = [predict(quick, zeros(1))[0] for _ in range(20)]  # while the lone one waits
        status, waited = lone.result()[0], time.time() - started
        time.sleep(max(0.0, started + 8.5 - time.time()))  # the timed-out request's batch goes at 8 s
        full_batch = list(pool.map(lambda _: predict(slow, zeros(1))[0], range(8)))  # 8 fill a batch: no wait
    print(f"timeout: lone request {status} after {waited:.1f} s; meanwhile {Counter(meanwhile)}; "
          f"then a full batch {Counter(full_batch)}")
    assert status == 408 and waited < 8
    assert set(meanwhile) == {200} and set(full_batch) == {200}
    assert replicas("slow") == before


def test_autoscaling_adds_replicas_under_load_and_removes_them_after(checkpoints, serve_http):
    autoscaling = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1, "upscale_delay_s": 1,
                   "downscale_delay_s": 2, "metrics_interval_s": 0.5, "look_back_period_s": 2}
    url = deploy("elastic", checkpoints[0][-1], serve_http, num_cpus=0.1, autoscaling=autoscaling,
                 max_batch_size=4, batch_wait_timeout_s=0.1)["url"]
    assert len(replicas("elastic")) == 1
    stop, statuses = threading.Event(), Counter()

    def client():
        while not stop.is_set():
            statuses[predict(url, zeros(1))[0]] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    peak, deadline = 1, time.time() + 60
    while peak < 2 and time.time() < deadline:
        time.sleep(0.5)
        peak = max(peak, len(replicas("elastic")))
    stop.set()
    for t in threads:
        t.join()
    assert peak >= 2, "no replica was added under sustained load"
    assert set(statuses) == {200}, statuses
    deadline = time.time() + 60
    while len(replicas("elastic")) > 1 and time.time() < deadline:
        time.sleep(0.5)
    assert len(replicas("elastic")) == 1, "the added replicas were not removed once the load stopped"


@pytest.mark.reliability
def test_rolling_update_and_rollback_under_steady_load_fail_no_request(checkpoints, serve_http):
    from orchestrator import serve

    paths, _ = checkpoints
    url = deploy("rolling", paths[0], serve_http, graceful_shutdown_timeout_s=30)["url"]
    rollout = {k: v for k, v in deployment_config("rolling").items() if k.startswith(("graceful_shutdown", "max_surge"))}
    assert rollout == {"graceful_shutdown_wait_loop_s": 2, "graceful_shutdown_timeout_s": 30,
                       "max_surge_percent": 25}  # they reach Serve
    versions = {p: Predictor.load(p).version for p in paths}
    assert len(set(versions.values())) == 3
    with steady_load(url) as (seen, failures, _):
        time.sleep(1)
        updated = deploy("rolling", paths[1], serve_http)
        assert updated["previous_checkpoints"] == [paths[0]]
        time.sleep(1)
        deploy("rolling", paths[2], serve_http)
        time.sleep(1)
        back = serve.rollback("rolling", **serve_http)
        time.sleep(1)
        # a resource change restarts the replica: the new one starts first (max_surge_percent), then the old drains
        before = replicas("rolling")
        deploy("rolling", paths[1], serve_http, num_cpus=0.2)
        assert wait_for(lambda: len(now := replicas("rolling")) == 1 and now != before), "the replica did not restart"
        time.sleep(1)
    assert failures == []
    assert back["checkpoint"] == paths[1] and back["previous_checkpoints"] == [paths[0]]
    assert {versions[p] for p in paths} <= set(seen), seen  # every version answered, none failed
    assert http("GET", f"{url}/v1/model")[2]["version"] == versions[paths[1]]
    status = serve.status()["applications"]["rolling"]
    assert status["checkpoint"] == paths[1] and status["status"] == "RUNNING"


def test_an_endpoint_serving_an_alias_follows_promote_and_rollback_without_failing(checkpoints, serve_http,
                                                                                   tmp_path):
    from orchestrator import serve
    from orchestrator.registry import Registry

    paths, _ = checkpoints
    reg = Registry(str(tmp_path / "registry"))
    for p in paths[:2]:
        reg.register("m", p, metrics={"test_accuracy": 0.9}, gates={}, source={})
    reg.promote("m", 1)
    url = deploy("alias", "models:/m@production", serve_http, registry=reg.root)["url"]
    model = http("GET", f"{url}/v1/model")[2]
    assert model["registry"]["version"] == 1 and model["registry"]["ref"] == "models:/m@production"
    digits_fingerprint = model["lineage"]["data_fingerprint"]
    assert model["lineage"]["config_hash"] and model["lineage"]["code_version"].startswith(("git:", "package:"))
    versions = {v: Predictor.load(reg.resolve("m", v)["checkpoint"]).version for v in (1, 2)}

    with steady_load(url) as (seen, failures, _):
        time.sleep(1)
        assert reg.promote("m", 2)["promoted"]
        moved = serve.follow_alias("m", "production", reg.root, **serve_http)
        assert [m["app"] for m in moved] == ["alias"] and http("GET", f"{url}/v1/model")[2]["registry"]["version"] == 2
        time.sleep(1)
        reg.rollback("m")
        serve.follow_alias("m", "production", reg.root, **serve_http)
        time.sleep(1)
    assert failures == []
    assert set(versions.values()) <= set(seen), seen  # both versions answered, no request failed
    assert http("GET", f"{url}/v1/model")[2]["registry"]["version"] == 1

    # new data, new fingerprint: a model trained on other data reports it at the endpoint
    other = train(load_config(ROOT / "jobs" / "digits-mlp.yaml", [
        f"storage.path={tmp_path}", "train.epochs=1", "data.name=synthetic", "data.num_samples=300",
        "data.feature_shape=[1, 8, 8]"]))
    reg.register("m", other.checkpoint, metrics=other.metrics, gates={}, source={})
    assert reg.promote("m", 3, force=True)["promoted"]  # worse than v1, on other data: forced
    serve.follow_alias("m", "production", reg.root, **serve_http)
    model = http("GET", f"{url}/v1/model")[2]
    assert model["registry"]["version"] == 3 and model["lineage"]["data_fingerprint"] != digits_fingerprint
    assert model["lineage"]["data_uri"].startswith("synthetic:")


ALLOWED = {200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 503}  # never another 5xx


def fuzz_cases(model: str):
    """Requests a hostile or careless client might send: right-shaped inputs with NaN, Infinity,
    huge integers, strings, nulls; arbitrary JSON and bytes; Open Inference Protocol tensors of any shape,
    datatype and data (to `model`); KServe v1's paths; other content types, methods and paths."""
    from hypothesis import strategies as st

    scalar = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**80, 2**80), st.booleans(),
                       st.none(), st.text(max_size=4))
    row = st.lists(scalar, min_size=8, max_size=8)
    shaped = st.lists(st.lists(st.lists(row, min_size=8, max_size=8), min_size=1, max_size=1), max_size=5)
    anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8),
                                                                                                  inner, max_size=4),
                            max_leaves=30)
    tensor = st.fixed_dictionaries({"name": st.sampled_from(["input", "x"]), "shape": st.lists(
        st.integers(-1, 70), max_size=4), "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP8"]),
        "data": st.one_of(anything, st.lists(scalar, min_size=64, max_size=64))})
    body = st.one_of(
        st.one_of(shaped, anything).map(lambda i: json.dumps({"instances": i}).encode()),
        st.lists(tensor, max_size=3).map(lambda t: json.dumps({"inputs": t}).encode()),
        anything.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    )
    route = st.sampled_from([("POST", "/v1/predict")] * 8 + [("GET", "/v1/model"), ("GET", "/v1/predict"),
                                                              ("PUT", "/v1/predict"), ("DELETE", "/v1/model"),
                                                              ("POST", "/healthz"), ("GET", "/no/such/path")]
                            + [("POST", f"/v2/models/{model}/infer")] * 4 + [("GET", f"/v2/models/{model}")]
                            + [("POST", f"/v1/models/{model}:predict")] * 2 + [("GET", f"/v1/models/{model}"),
                                                                                ("POST", "/v1/models/x:predict")])
    content_type = st.sampled_from(["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain",
                                                                "application/x-www-form-urlencoded", "", "text/csv",
                                                                "image/png", "text/csv; charset=base64",
                                                                "multipart/form-data; boundary=b"])
    return st.tuples(route, body, content_type)


@pytest.mark.reliability
def test_fuzzing_the_http_api_gets_only_4xx_or_2xx_and_restarts_nothing(checkpoints, serve_http):
    from hypothesis import HealthCheck, given, settings

    url = deploy("fuzz", checkpoints[0][-1], serve_http, max_instances=4, max_body_bytes=4096)["url"]
    before = replicas("fuzz")
    statuses, unexpected = Counter(), []

    @settings(max_examples=500, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fuzz_cases(Predictor.load(checkpoints[0][-1]).info["name"]))
    def one(case):
        (method, path), body, content_type = case
        status, _, answer = http(method, f"{url}{path}", body if method in ("POST", "PUT") else None,
                                 {"Content-Type": content_type} if content_type else {})
        statuses[status] += 1
        if status not in ALLOWED:
            unexpected.append((method, path, body[:200], status, answer))

    one()
    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 500 and unexpected == []
    assert replicas("fuzz") == before  # the same replica process answered every case


@pytest.mark.reliability
def test_replicas_killed_under_load_cost_no_request_with_the_client_retry_policy(checkpoints, serve_http):
    import os
    import signal

    target = 2
    url = deploy("phoenix", checkpoints[0][-1], serve_http,
                 autoscaling={"min_replicas": target, "max_replicas": target}, num_cpus=0.25)["url"]
    kills = []
    live = lambda: [pid for _, pid in replicas("phoenix") if pid not in kills]  # Serve lags a kill
    with steady_load(url, retries=6) as (seen, failures, stats):
        rng = random.Random(0)
        for _ in range(3):
            time.sleep(2)
            wait_for(lambda: len(live()) >= target)  # the previous kill's replacement is up before the next kill
            pid = rng.choice(live())
            os.kill(pid, signal.SIGKILL)
            kills.append(pid)
        time.sleep(3)
    wait_for(lambda: len(live()) >= target)
    print(f"replica kills: {len(kills)} kills, {sum(seen.values()) + len(failures)} requests, "
          f"{len(failures)} failed, {stats.get('retries', 0)} retries")
    assert failures == []  # every request succeeded, some after retries
    assert len(replicas("phoenix")) == target and not set(kills) & {pid for _, pid in replicas("phoenix")}


@pytest.mark.reliability
def test_a_replica_whose_model_breaks_is_replaced_and_clients_see_no_error(checkpoints, serve_http, ray_cluster):
    target = 2
    url = deploy("sick", checkpoints[0][-1], serve_http, health_check_period_s=1,
                 autoscaling={"min_replicas": target, "max_replicas": target})["url"]
    victim = running_replicas("sick")[0]

    def break_model(_replica) -> int:
        """Runs in the replica's process: NaN into every weight, as a failing device or a bad
        in-place update would leave them. Returns how many modules it broke."""
        import gc

        import torch

        # the models reachable from the replica actor (Ray freezes the gc, so gc.get_objects() misses them)
        seen, todo, modules = set(), [_replica], []
        while todo and len(seen) < 1_000_000:
            o = todo.pop()
            if id(o) in seen or isinstance(o, (str, bytes, int, float, type)):
                continue
            seen.add(id(o))
            if isinstance(o, torch.nn.Module):
                modules.append(o)
            else:
                todo += gc.get_referents(o)
        with torch.no_grad():
            for m in modules:
                for p in m.parameters():
                    p.fill_(float("nan"))
        return len(modules)

    with steady_load(url, retries=6) as (seen, failures, stats):
        time.sleep(1)
        actor = ray_cluster.get_actor(victim["actor_name"], namespace="serve")
        broken = ray_cluster.get(actor.__ray_call__.remote(break_model))
        replaced = wait_for(lambda: victim["pid"] not in [pid for _, pid in replicas("sick")]
                            and len(replicas("sick")) == target)
        time.sleep(1)
    print(f"broken model: {broken} modules NaN; replaced: {replaced}; {sum(seen.values())} requests answered, "
          f"{len(failures)} failed, {stats.get('retries', 0)} retries (503s from the broken replica)")
    assert broken >= 1 and replaced
    assert failures == [] and sum(seen.values()) > 0
    assert stats.get("retries", 0) >= 1  # the broken replica did answer, with a retryable 503, not a wrong answer


@pytest.mark.reliability
def test_every_ray_and_serve_port_of_the_embedded_ray_listens_on_loopback_only(checkpoints, serve_http):
    import psutil

    from tests.conftest import MARKER, marked_pids

    deploy("ports", checkpoints[0][-1], serve_http)  # a replica and the HTTP ingress are up
    listening = []
    for pid in {os.getpid(), *marked_pids(MARKER)}:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
    exposed = [x for x in listening if x[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    print(f"ports: {len(listening)} listening sockets in {len({x[0] for x in listening})} kinds of process, "
          f"{len(exposed)} beyond loopback")
    assert len(listening) >= 5 and exposed == [], exposed

    # the ingress is HAProxy (orchestrator/ingress.py): its stats page and exporter were moved to loopback, and
    # its admin socket, which can repoint every backend, is in a directory no other user can enter
    stats, exporter = (int(os.environ[f"RAY_SERVE_HAPROXY_{k}_PORT"]) for k in ("STATS", "METRICS"))
    assert {("haproxy", "127.0.0.1", stats), ("haproxy", "127.0.0.1", exporter)} <= set(listening), listening
    assert http("GET", f"http://127.0.0.1:{stats}/stats")[0] == 200
    private = Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent
    assert private.stat().st_mode & 0o077 == 0 and list(private.glob("*/admin.sock"))
