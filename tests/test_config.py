"""The configuration loader: defaults, YAML files, --key value overrides, clear errors."""
import pytest
import torch

from csnln.cli import parse
from csnln.config import ConfigError, load_config, options
from csnln.inference import set_cudnn_benchmark, use_channels_last


def test_defaults_are_the_papers_recipe():
    c = load_config()
    assert (c["scale"], c["patch_size"], c["batch_size"], c["n_feats"], c["depth"]) == (2, 96, 16, 128, 12)
    assert (c["lr"], c["decay"], c["gamma"], c["epochs"], c["rgb_range"]) == (1e-4, "200", 0.5, 1000, 1)


def test_overrides_are_typed_like_the_defaults():
    c = load_config(overrides=["--lr", "2e-4", "--chop", "--depth=3", "--data_test", "Set5+Set14"])
    assert c["lr"] == 2e-4 and isinstance(c["lr"], float)
    assert c["chop"] is True and c["depth"] == 3 and c["data_test"] == "Set5+Set14"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("n_feats: 32\ndepth: 2\n")
    c = load_config(path, overrides={"depth": 4})
    assert (c["n_feats"], c["depth"]) == (32, 4)


@pytest.mark.parametrize("overrides,message", [
    (["--n_feat", "64"], "unknown config key 'n_feat'; did you mean n_feats"),
    (["--scale", "8"], "'scale' must be 2, 3 or 4"),
    (["--lr", "fast"], "'lr' expects float"),
    (["--patch_size", "97"], "multiple of scale"),
    (["depth", "3"], "expected --key value"),
])
def test_bad_overrides_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_unknown_key_in_a_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batchsize: 8\n")
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_one_command_line_for_both_tools(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data_path: somewhere\nepochs: 5\n")  # a run's settings, shared by both tools
    for prog in ("train.py", "eval.py"):
        config, explicit = parse(prog, [f"--config={path}", "--scale=3"])
        assert (config["data_path"], config["epochs"], config["scale"]) == ("somewhere", 5, 3)
        assert explicit == {"data_path", "epochs", "scale"}
    assert parse("eval.py", ["--ckpt_file", "m.pt"])[0]["ckpt"] == "m.pt"
    with pytest.raises(ConfigError, match="--epochs is an option of train.py; eval.py does not use it"):
        parse("eval.py", ["--epochs", "5"])
    with pytest.raises(ConfigError, match="--out is an option of eval.py; train.py does not use it"):
        parse("train.py", ["--out", "x"])
    for argv in (["--config", "--scale", "3"], ["--config="]):
        with pytest.raises(ConfigError, match="--config needs a path"):
            parse("train.py", argv)


def test_every_key_has_a_meaning_and_its_tools():
    entries = options()
    assert list(entries) == list(load_config())
    for key, (default, meaning, tools) in entries.items():
        assert meaning and set(tools) <= {"train.py", "eval.py", "csnln.export"} and tools, key
    assert entries["lr"][2] == ("train.py",) and entries["ckpt"][2] == ("eval.py", "csnln.export")
    assert entries["opset"][2] == ("csnln.export",)
    assert entries["chop"][2] == ("train.py", "eval.py")


@pytest.mark.parametrize("overrides,message", [
    (["--lr="], "'lr' needs a value"),
    (["--epochs", "0"], "'epochs' must be at least 1"),
    (["--data_range", "5-2/801-810"], "5-2 is not a range"),
    (["--decay", "0"], "'decay' must be epochs"),
    (["--betas", "[0.9"], "cannot read the value"),
    (["--data_test"], "'data_test' expects str"),
])
def test_empty_and_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)
    assert load_config(overrides=["--data_test", ""])["data_test"] == ""


@pytest.mark.parametrize("overrides,repeat,on", [([], True, True), ([], False, False),
                                                 (["--cudnn_benchmark", "false"], True, False)])
def test_cudnn_benchmark_on_by_default_where_shapes_repeat(monkeypatch, overrides, repeat, on):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not on)
    assert set_cudnn_benchmark(load_config(overrides=overrides)["cudnn_benchmark"], repeat) is on
    assert torch.backends.cudnn.benchmark is on


@pytest.mark.parametrize("overrides,cuda,cpu", [([], True, False), (["--channels_last", "true"], True, True),
                                                (["--channels_last", "false"], False, False)])
def test_channels_last_auto_is_on_with_cuda_only(overrides, cuda, cpu):
    setting = load_config(overrides=overrides)["channels_last"]
    assert use_channels_last(setting, torch.device("cuda")) is cuda
    assert use_channels_last(setting, torch.device("cpu")) is cpu


def test_channels_last_takes_true_false_or_auto():
    with pytest.raises(ConfigError, match="true, false or auto"):
        load_config(overrides=["--channels_last", "sometimes"])
