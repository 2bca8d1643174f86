"""Flags generated from config dataclasses: defaults from the class, values back into the class, --help lists them."""

from __future__ import annotations

import dataclasses

import pytest
from absl import flags

from jaxneurons.config_flags import config_from_flags, define_config_flags, field_help
from tests.helpers import run_python


@dataclasses.dataclass(frozen=True)
class Inner:
    components: int = 64
    space: str = field_help("ivector", "clustering space", choices=("ivector", "supervector"))


@dataclasses.dataclass(frozen=True)
class Outer:
    rho: float = field_help(0.01, "top-k fraction (1 %)")
    layer: int | None = None
    properties: tuple[str, ...] = ("phone_type", "gender")
    edges: tuple[float, ...] = (129.03, 179.78)
    zscore: bool = False
    inner: Inner = Inner()
    fixed: str = "x"

    def __post_init__(self) -> None:
        if self.rho <= 0:
            raise ValueError("rho must be positive")


def _parse(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    names = define_config_flags(Outer, skip=("fixed",), flag_values=fv, module_name="test")
    assert "fixed" not in names and "inner_components" in names
    fv(["prog", *argv])
    return fv


def test_defaults_round_trip_to_the_class_defaults():
    fv = _parse([])
    assert config_from_flags(Outer, skip=("fixed",), flag_values=fv) == Outer()


def test_command_line_values_reach_every_field_type():
    fv = _parse(["--rho=0.02", "--layer=3", "--properties=speaker", "--edges=100,200", "--zscore",
                 "--inner_components=32", "--inner_space=supervector"])
    cfg = config_from_flags(Outer, skip=("fixed",), flag_values=fv, fixed="y")
    assert cfg == Outer(rho=0.02, layer=3, properties=("speaker",), edges=(100.0, 200.0), zscore=True,
                        inner=Inner(32, "supervector"), fixed="y")


def test_bad_values_fail_with_the_config_or_flag_message():
    with pytest.raises(flags.IllegalFlagValueError):
        _parse(["--inner_space=nope"])
    fv = _parse(["--rho=-1"])
    with pytest.raises(ValueError, match="rho must be positive"):
        config_from_flags(Outer, skip=("fixed",), flag_values=fv)


def test_mutable_defaults_are_refused():
    with pytest.raises(TypeError):
        field_help([1, 2], "no")


@pytest.mark.parametrize("command", [["jaxneurons", "scan"], ["jaxneurons", "heads"], ["jaxneurons", "train"],
                                     ["jaxneurons-convert"]])
def test_help_lists_the_commands_own_flags(command):
    entry = "jaxneurons.cli" if command[0] == "jaxneurons" else "checkpoints_convert.convert"
    args = command[1:] if command[0] == "jaxneurons" else []
    out = run_python(["-c", f"import sys; from {entry} import run; run(sys.argv)", *args, "--help"],
                     returncodes=(0, 1))  # absl's --help exits with status 1
    text = out.stdout + out.stderr
    assert "Try --helpfull" in text
    expected = {"scan": "--manifest", "heads": "--manifest", "train": "--manifest"}.get(args[0] if args else "",
                                                                                     "--source")
    assert expected in text, text[:2000]
