"""The configuration loader: defaults, YAML files, --key value overrides, clear errors."""
import pytest

from csnln.config import ConfigError, load_config


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
