"""Every shipped config under configs/ (recursively) loads and validates.

A file's family is its top-level ``kind`` key when present, else its file-name prefix: ``rl*`` -> coupled-GRPO
(``diffucoder.rl.config.GRPOConfig.from_yaml``), anything else -> training (``diffucoder.training.load_config``).
Each config must start with a comment line holding the exact command that runs it.
"""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def family(path: Path) -> str:
    data = yaml.safe_load(path.read_text()) or {}
    kind = data.get("kind") if isinstance(data, dict) else None
    if isinstance(kind, str):
        return kind
    return "rl" if path.name.startswith("rl") else "train"


def load(path: Path):
    fam = family(path)
    if fam == "train":
        from diffucoder.training import load_config

        return load_config(path)
    if fam == "rl":
        rl = pytest.importorskip("diffucoder.rl.config")
        return rl.GRPOConfig.from_yaml(path)
    raise AssertionError(f"{path}: unknown config kind {fam!r}")


def test_there_are_configs():
    assert any(family(p) == "train" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("diffucoder" in first or "torchrun" in first), \
        f"{path}: the first line must be the command that runs it, got {first!r}"
    cfg = load(path)
    assert cfg is not None
    if family(path) == "train":
        assert path.name in first or str(path.relative_to(ROOT)) in first


def test_training_config_round_trips(tmp_path):
    from diffucoder.training import dump_config, load_config

    cfg = load_config(ROOT / "configs" / "pretrain_tiny_cpu.yaml", ["optim.lr=1e-3", "data.corpus=[stdlib, x.py]"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_unknown_keys_are_rejected_with_the_valid_ones(tmp_path):
    from diffucoder.training import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key\(s\) \['optim.learning_rate'\] in optim; valid keys: "
                                          r"\['steps'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["diffusion.normalization=per_row"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["optim.steps=ten"])


def test_errors_name_the_override_or_the_file_that_holds_the_bad_value(tmp_path):
    """A bad value from the command line is blamed on the override as typed, one from the file on the file."""
    from diffucoder.training import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: fast\n  steps: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert str(e.value) == f"{cfg}: optim.lr: expected a number, got 'fast'"
    with pytest.raises(ConfigError) as e:
        load_config(cfg, ["optim.lr=abc"])
    assert str(e.value) == "optim.lr: expected a number, got 'abc' (from the override optim.lr=abc)"
    with pytest.raises(ConfigError) as e:  # a validate() error is attributed through the keys it names
        load_config(cfg, ["optim.lr=1e-3", "optim.steps=0"])
    assert str(e.value) == "optim.steps must be >= 1, got 0 (from the override optim.steps=0)"
    with pytest.raises(ConfigError, match=r"did you mean 'lr'\?.*\(from the override optim.lrr=1\)"):
        load_config(cfg, ["optim.lr=1e-3", "optim.lrr=1"])
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="is a folder, expected a config file"):
        load_config(tmp_path / "d")
    (tmp_path / "l1.yaml").write_bytes("seed: 1 # d\xe9j\xe0\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"l1.yaml: config file is not UTF-8 text .*line 1"):
        load_config(tmp_path / "l1.yaml")


def test_rl_overrides_are_type_checked_and_attributed(tmp_path):
    from diffucoder.rl import GRPOConfig, RLConfigError

    with pytest.raises(RLConfigError) as e:
        GRPOConfig.from_yaml(ROOT / "configs" / "rl_synthetic_cpu.yaml", ["max_steps=two"])
    assert str(e.value) == "max_steps: expected an integer, got 'two' (from the override max_steps=two)"
    with pytest.raises(RLConfigError, match=r"did you mean 'max_steps'"):
        GRPOConfig.from_yaml(ROOT / "configs" / "rl_synthetic_cpu.yaml", ["max_stepz=2"])
    with pytest.raises(RLConfigError, match=r"^beta must be >= 0, got -1.0 \(from the override beta=-1\)$"):
        GRPOConfig.from_yaml(ROOT / "configs" / "rl_synthetic_cpu.yaml", ["beta=-1"])
