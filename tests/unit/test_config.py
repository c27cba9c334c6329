import typing
import zipfile
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from orchestrator import config as C
from orchestrator import explain
from orchestrator.config import ConfigError, apply_overrides, config_from_dict, load_config

JOBS = sorted(Path(__file__).parents[2].joinpath("jobs").glob("*.yaml"))
BASE = {"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp"}}


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_job_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.name


def test_overrides_are_typed_and_nested():
    cfg = load_config(JOBS[0], ["train.num_workers=4", "optim.lr=0.01", "model.dropout=0.3", "train.use_gpu=true"])
    assert cfg.train.num_workers == 4 and cfg.optim.lr == 0.01 and cfg.model.dropout == 0.3 and cfg.train.use_gpu
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def _error(raw) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    return str(e.value)


def test_typo_suggests_nearest_key():
    msg = _error({**BASE, "optim": {"lrr": 0.1}})
    assert "optim.lrr" in msg and "did you mean 'lr'" in msg


TUNE = {"space": {"optim.lr": {"uniform": [0.01, 0.1]}}}


@pytest.mark.parametrize("raw, words", [
    ({"train": {"lr": 0.1}}, "unknown key 'train.lr'; did you mean 'optim.lr'?"),  # a key of another section
    ({"tune": {**TUNE, "grace_period": 2}}, "did you mean 'tune.scheduler.grace_period'?"),
    ({"optim": {"epochs": 3}}, "did you mean 'train.epochs'?"),  # before the fuzzy 'warmup_epochs'
    ({"tune": {**TUNE, "colour": 2}}, "unknown key 'tune.colour'; valid keys: space, metric, mode"),  # optional section
    # a key of another kind of the same section: the YAML's mlp sizes left behind by model.name=cnn
    ({"model": {"name": "cnn", "hidden_sizes": [8]}},
     "unknown key 'model.hidden_sizes': model 'cnn' has no 'hidden_sizes' (mlp has it); the keys of model 'cnn': "),
    ({"data": {"name": "digits", "path": "x.csv"}}, "data 'digits' has no 'path' (files and text have it)"),
])
def test_a_key_in_the_wrong_place_names_where_it_goes(raw, words):
    assert words in _error({**BASE, **raw})


@pytest.mark.parametrize("raw, words", [  # what other tools call them, and the key here
    ({"optim": {"learning_rate": 0.1}}, "unknown key 'optim.learning_rate'; did you mean 'optim.lr'?"),
    ({"train": {"batch_size": 64}}, "unknown key 'train.batch_size'; did you mean 'train.batch_size_per_worker'?"),
    ({"train": {"max_epochs": 3}}, "did you mean 'train.epochs'?"),  # Lightning's
    ({"train": {"lr_scheduler": "cosine"}}, "did you mean 'optim.schedule'?"),
    ({"optim": {"scheduler": "cosine"}}, "did you mean 'optim.schedule'?"),  # not tune.scheduler, a search's
    ({"train": {"device": "cuda"}}, "did you mean 'train.use_gpu'?"),
    ({"train": {"output_dir": "out"}}, "did you mean 'storage.path'?"),  # Hugging Face's Trainer
    ({"data": {"name": "files", "path": "t.csv", "target": "y"}}, "did you mean 'data.label_column'?"),
    ({"data": {"name": "digits", "validation_split": 0.2}}, "did you mean 'data.val_fraction'?"),  # Keras'
    ({"optimizer": {"name": "adam"}}, "unknown key 'optimizer'; did you mean 'optim'?"),
    ({"model": {"name": "mlp", "hidden_sizes": 64}}, "model.hidden_sizes: Input should be a valid list (got 64: write "
                                                     "[64])"),
])
def test_keys_as_other_tools_name_them_suggest_the_key_here(raw, words):
    assert words in _error({**BASE, **raw})


def test_every_key_suggested_for_another_tools_name_is_one_here():
    for other, mine in explain.OTHER_NAMES.items():
        assert mine in explain.paths_to(mine.rpartition(".")[2], C.ExperimentConfig), (other, mine)


def test_a_section_chosen_by_its_name_may_be_given_as_the_name():
    cfg = config_from_dict({"name": "t", "data": "digits", "model": "cnn", "optim": "adam",
                            "tune": {**TUNE, "scheduler": "fifo", "search": "optuna"}})
    assert (cfg.data.name, cfg.model.name, cfg.optim.name, cfg.tune.scheduler.name, cfg.tune.search.name) == (
        "digits", "cnn", "adam", "fifo", "optuna")
    assert cfg.model == config_from_dict({**BASE, "model": {"name": "cnn"}}).model  # every other field its default
    # on the command line too, and a field set below it
    raw = apply_overrides({"name": "t", "data": "digits", "model": "mlp"}, ["model=cnn", "model.channels=[8]",
                                                                           "optim=sgd"])
    cfg = config_from_dict(raw)
    assert (cfg.model.name, cfg.model.channels, cfg.optim.name) == ("cnn", [8], "sgd")
    assert "model.name: 'resnet' is not one of" in _error({**BASE, "model": "resnet"})


def test_typo_inside_a_model_family_names_the_user_path():
    msg = _error({**BASE, "model": {"name": "cnn", "chanels": [8]}})
    assert "'model.chanels'" in msg and "did you mean 'channels'" in msg


def test_wrong_type_names_the_field():
    msg = _error({**BASE, "train": {"epochs": "ten"}})
    assert "train.epochs" in msg and "'ten'" in msg


def test_unknown_model_and_dataset_list_the_choices():
    assert "'resnet' is not one of" in _error({**BASE, "model": {"name": "resnet"}})
    msg = _error({**BASE, "data": {"name": "mnist"}})
    assert "data.name" in msg and "digits" in msg


@pytest.mark.parametrize("raw, words", [
    ({"name": "t", "data": {"name": "digits"}}, "model is missing: add a model section with a name, one of ['mlp', "),
    ({**BASE, "model": {"hidden_sizes": [8]}}, "model.name is missing: one of ['mlp', 'cnn', "),
    ({**BASE, "data": {"path": "x.csv"}}, "data.name is missing: one of ['digits', 'synthetic', 'files', 'text']"),
    ({**BASE, "model": yaml.safe_load("{name:cnn}")}, "(YAML reads 'name:cnn' as one key: put a space after the colon)"),
    ({**BASE, "model": 3}, "model is a section, not a value: set model.name, one of ['mlp', "),
    ({**BASE, "model": {"type": "cnn"}}, "model.name is missing: one of ['mlp', 'cnn', 'rnn', 'transformer', 'gpt'] "
                                         "(it has 'type': the kind goes in name, model: {name: cnn})"),  # Ludwig's
])
def test_a_missing_section_or_name_lists_the_choices(raw, words):
    assert words in _error(raw)


def test_checkpoint_metric_must_be_a_reported_metric():
    msg = _error({**BASE, "train": {"checkpoint_metric": "val_acc"}})
    assert "train.checkpoint_metric" in msg and "val_accuracy" in msg


def test_cross_field_rules():
    assert "num_heads" in _error({**BASE, "model": {"name": "transformer", "d_model": 30, "num_heads": 4}})
    assert "nesterov" in _error({**BASE, "optim": {"name": "adam", "nesterov": True}})
    assert "gpus_per_worker" in _error({**BASE, "train": {"gpus_per_worker": 0.5}})
    assert "model.name: gpt trains on data.name: text" in _error({**BASE, "model": {"name": "gpt"}})
    assert "text data needs model.name: gpt" in _error({**BASE, "data": {"name": "text"}})
    assert "n_head" in _error({**BASE, "data": {"name": "text"}, "model": {"name": "gpt", "d_model": 30, "n_head": 4}})
    text = {"name": "files", "path": "t.csv", "text_column": "review"}
    assert ("data.text_column is read as text, not an image: remove data.feature_shape, data.augment.enabled (it "
            "shifts images)") in _error({**BASE, "data": {**text, "feature_shape": [2, 2],
                                                          "augment": {"enabled": True}}})
    assert "data.feature_columns names the label column 'label': the model would read the answer" in _error(
        {**BASE, "data": {"name": "files", "path": "t.csv", "feature_columns": ["a", "label"]}})
    assert "data.feature_columns lists ['a'] more than once: list each column once" in _error(
        {**BASE, "data": {"name": "files", "path": "t.csv", "feature_columns": ["a", "b", "a"]}})
    assert "data.feature_columns names the text column 'review': list only the columns beside it" in _error(
        {**BASE, "data": {**text, "feature_columns": ["stars", "review"]}})
    assert config_from_dict({**BASE, "data": {**text, "feature_columns": ["stars"]}}).data.feature_columns == ["stars"]
    assert "train.class_weight weighs the classes of a classifier: a language model has none" in _error(
        {**BASE, "data": {"name": "text"}, "model": {"name": "gpt"}, "train": {"class_weight": "balanced"}})
    assert "data.text_column and data.label_column both name 'label'" in _error(
        {**BASE, "data": {**text, "text_column": "label"}})
    # a title and a body: one text, read in turn; each column once, none of them the label or beside it
    two = config_from_dict({**BASE, "data": {**text, "text_column": ["title", "review"]}}).data
    assert two.text_columns == ["title", "review"] and two.text_name == "title+review"
    for columns, words in [([], "data.text_column lists no column"),
                           (["title", "title"], "data.text_column lists ['title'] more than once"),
                           (["title", "label"], "data.text_column and data.label_column both name 'label'")]:
        assert words in _error({**BASE, "data": {**text, "text_column": columns}})
    assert "data.feature_columns names the text column 'title': list only the columns beside it" in _error(
        {**BASE, "data": {**text, "text_column": ["title", "review"], "feature_columns": ["title", "stars"]}})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(JOBS[0], ["train.epochs"])


def test_exponents_are_numbers_as_ml_configs_write_them(tmp_path):
    # PyYAML reads YAML 1.1, where 1e-3 is text; every learning rate in the field is written so
    p = tmp_path / "e.yaml"
    p.write_text("data: {name: digits}\nmodel: {name: mlp}\noptim: {lr: 1e-3, weight_decay: 5E-4}\n"
                 "tune: {space: {optim.lr: {loguniform: [1e-5, .5e-1]}}}\n")
    cfg = load_config(p, ["optim.momentum=9e-1", "train.run_name=1e3x"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == (0.001, 0.0005, 0.9)
    assert cfg.tune.space["optim.lr"] == {"loguniform": [1e-05, 0.05]} and cfg.train.run_name == "1e3x"
    assert [C.load_yaml(t) for t in ("1.2.3", "1e", "0x1f", "10", "1_000")] == ["1.2.3", "1e", 31, 10, 1000]


def test_a_key_written_twice_is_refused_and_yaml_errors_say_where(tmp_path):
    # PyYAML keeps the last of two `optim:` sections: lr 0.1 would be lost without a word
    p = tmp_path / "twice.yaml"
    p.write_text("data: {name: digits}\noptim:\n  lr: 0.1\nmodel: {name: mlp}\noptim:\n  name: sgd\n")
    with pytest.raises(ConfigError, match=r"twice.yaml is not valid YAML: line 5, column 1: 'optim' is set twice in "
                                          r"one mapping \(first on line 2\): keep one"):
        load_config(p)
    with pytest.raises(ConfigError, match="'lr' is set twice"):
        load_config(JOBS[0], ["optim={lr: 0.1, lr: 0.2}"])
    # a merge key's values may be overridden: that is what it is for
    p.write_text("data: {name: digits}\nmodel: {name: mlp}\nbase: &b {lr: 0.1, name: sgd}\noptim: {<<: *b, lr: 0.2}\n")
    assert C.read_yaml(p, "config", "a mapping")[0]["optim"] == {"lr": 0.2, "name": "sgd"}
    p.write_text("data:\n\tname: digits\n")
    with pytest.raises(ConfigError, match=r"line 2, column 1: found character '\\t' that cannot start any token "
                                          r"\(indent with spaces: YAML takes no tabs\)"):
        load_config(p)


@pytest.mark.parametrize("value, words", [
    ("1e-3", "got '1e-3': text to a YAML 1.1 reader, as Ray's `serve deploy` is; write 0.001"),  # deploy/serve.yaml
    ("0.01", "got '0.01': text; write it without quotes"),
])
def test_a_number_given_as_text_says_how_to_write_it(value, words):
    assert words in _error({**BASE, "optim": {"lr": value}})


def test_name_defaults_to_file_stem(tmp_path):
    p = tmp_path / "my-exp.yaml"
    p.write_text("data: {name: digits}\nmodel: {name: mlp}\n")
    assert load_config(p).name == "my-exp"


def _sections():
    seen, todo = set(), [C.ExperimentConfig]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for field in cls.model_fields.values():
            for t in typing.get_args(field.annotation) + (field.annotation,):
                members = explain.tagged_union_members(t) or {}
                todo += [m for m in members.values()]
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    return seen


def test_every_field_is_described():
    undocumented = [f"{cls.__name__}.{n}" for cls in _sections() for n, f in cls.model_fields.items() if not f.description]
    assert len(_sections()) >= 12 and undocumented == []


def test_hash_is_stable_and_sensitive():
    a = config_from_dict(BASE)
    assert a.hash() == config_from_dict(dict(reversed(list(BASE.items())))).hash()
    assert a.hash() != config_from_dict({**BASE, "seed": 1}).hash()


def test_data_given_in_place_of_a_yaml_trains_with_the_starter_config(tmp_path, capsys, monkeypatch):
    """`orchestrator train titanic/train.csv data.label_column=Survived`: a newcomer's first run needed a YAML
    written first ("titanic/train.csv is not valid YAML"). Data in its place trains with a model for its kind and
    every other default, and says so; a YAML, or a file whose name says no data format, is read as before."""
    (tmp_path / "titanic").mkdir()
    (tmp_path / "titanic" / "train.csv").write_text("Age,Survived\n22,0\n38,1\n")
    cfg = load_config(tmp_path / "titanic" / "train.csv", ["data.label_column=Survived", "train.epochs=5"])
    assert (cfg.name, cfg.model.name, cfg.data.path, cfg.data.label_column, cfg.train.epochs) == (
        "titanic", "mlp", str(tmp_path / "titanic" / "train.csv"), "Survived", 5)
    assert "is data, not a YAML experiment: trained with model mlp and every other field's default; tune and run " \
           "search optim.lr, model.dropout, optim.weight_decay over 8 trials" in capsys.readouterr().out
    assert cfg.tune.requested_trials == 8 and cfg.tune.scheduler.name == "asha"  # a search to start `tune` with
    assert load_config(tmp_path / "titanic" / "train.csv", ["tune.num_samples=3"]).tune.num_samples == 3
    for folder, files, model in (("photos", ("cat/1.png", "dog/2.png"), "cnn"), ("reviews", ("pos/1.txt",), "rnn"),
                                 ("MNIST", ("raw/train-images-idx3-ubyte.gz",), "cnn")):
        for name in files:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / name).write_bytes(b"x")
        assert load_config(tmp_path / folder).model.name == model, folder
    with zipfile.ZipFile(tmp_path / "titanic.zip", "w") as z:  # Kaggle's download, or a file in it
        z.write(tmp_path / "titanic" / "train.csv", "train.csv")
    for path in (tmp_path / "titanic.zip", tmp_path / "titanic.zip" / "train.csv"):
        assert (load_config(path).name, load_config(path).model.name) == ("titanic", "mlp"), path
    (tmp_path / "titanic" / "train.zip").write_bytes((tmp_path / "titanic.zip").read_bytes())
    monkeypatch.chdir(tmp_path / "titanic")
    assert load_config("train.zip").name == "titanic"  # a Kaggle train.zip, given from its folder
    # a table whose one input but for ids is free text (SST-2's sentence beside idx): an rnn reading it
    sentences = [f"a {w} film seen {i} times over and over" for i, w in enumerate(["fine", "dull"] * 15)]
    (tmp_path / "sst2.csv").write_text("idx,sentence,label\n" + "".join(
        f"{i},{t},{i % 2}\n" for i, t in enumerate(sentences)))
    (tmp_path / "reviews.csv").write_text("stars,sentence,label\n" + "".join(
        f"{i % 5},{t},{i % 2}\n" for i, t in enumerate(sentences)))  # another input beside the text
    for given, model, text in (([], "rnn", "sentence"), (["model.name=transformer"], "transformer", "sentence"),
                               (["model.name=mlp"], "mlp", "sentence")):
        cfg = load_config(tmp_path / "sst2.csv", given)
        assert (cfg.model.name, cfg.data.text_column) == (model, text), given
    assert "trained with model rnn reading the text in column 'sentence' (data.text_column)" in capsys.readouterr().out
    assert (load_config(tmp_path / "reviews.csv").model.name, load_config(tmp_path / "reviews.csv").data.text_column) \
        == ("mlp", None)
    (tmp_path / "notes").write_text("not: [yaml")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "notes")
    with pytest.raises(ConfigError, match=r"\(data: the starter config\): model.name: 'resnet' is not one of"):
        load_config(tmp_path / "titanic" / "train.csv", ["model.name=resnet"])
