"""Settings are declared once (variable, default, parser, documentation) and parsed by their declared type."""

import typing
from dataclasses import dataclass, fields

import pytest

from config import EnvSettings, ServerSettings, Settings, environment_variables, parse_value, setting


@dataclass(frozen=True)
class Example(EnvSettings):
    ratio: float = setting("EXAMPLE_RATIO", 0.5, "a float")
    count: int = setting("EXAMPLE_COUNT", 1, "an int", minimum=1)
    flag: bool = setting("EXAMPLE_FLAG", False, "a bool")
    hosts: tuple[str, ...] = setting("EXAMPLE_HOSTS", (), "a list")
    name: str | None = setting("EXAMPLE_NAME", None, "an optional string")
    mode: str = setting("EXAMPLE_MODE", "fast", "a choice", choices=("fast", "exact"))


def test_each_value_arrives_as_its_declared_type():
    parsed = Example.from_env({"EXAMPLE_RATIO": "0.25", "EXAMPLE_COUNT": "1_000", "EXAMPLE_FLAG": "yes",
                               "EXAMPLE_HOSTS": " a.example, b.example ,", "EXAMPLE_NAME": "x",
                               "EXAMPLE_MODE": "EXACT"})
    assert parsed == Example(0.25, 1000, True, ("a.example", "b.example"), "x", "exact")
    assert type(parsed.ratio) is float and type(parsed.count) is int and type(parsed.flag) is bool


def test_unset_or_empty_means_the_default():
    assert Example.from_env({"EXAMPLE_RATIO": "  ", "EXAMPLE_NAME": ""}) == Example()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"EXAMPLE_RATIO": "half"}, "EXAMPLE_RATIO must be a number; got 'half'"),
        ({"EXAMPLE_COUNT": "1.5"}, "EXAMPLE_COUNT must be an integer; got '1.5'"),
        ({"EXAMPLE_COUNT": "0"}, "EXAMPLE_COUNT must be a positive integer; got 0"),
        ({"EXAMPLE_FLAG": "maybe"}, "EXAMPLE_FLAG must be true or false"),
        ({"EXAMPLE_MODE": "slow"}, "EXAMPLE_MODE must be one of fast, exact; got 'slow'"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_variable(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Example.from_env(env)


def test_a_setting_of_a_type_without_a_parser_is_a_programming_error():
    @dataclass(frozen=True)
    class Odd(EnvSettings):
        when: complex = setting("ODD_WHEN", 0j, "no parser for complex")

    with pytest.raises(TypeError, match="ODD_WHEN|when"):
        Odd.from_env({"ODD_WHEN": "1j"})


def test_every_setting_of_the_service_is_declared_with_a_variable_and_documentation():
    variables = environment_variables(Settings, ServerSettings)
    assert len(variables) == len(fields(Settings)) + len(fields(ServerSettings))  # no variable used twice
    for name, declared in variables.items():
        assert name.isupper() and declared.metadata["doc"], name


@pytest.mark.parametrize("cls", [Settings, ServerSettings])
def test_every_declared_type_of_the_service_has_a_parser(cls):
    types_by_name = typing.get_type_hints(cls)
    for declared in fields(cls):
        parse_value(declared, "1", types_by_name[declared.name])  # raises TypeError for a type without a parser


def test_the_ops_guide_names_are_kept():
    names = set(environment_variables(Settings, ServerSettings))
    assert {"DEVICE", "BATCH_SIZE", "CLIP_REFERENCE_PROJECT", "CLIP_SERVICE_HOST", "CLIP_SERVICE_PORT"} <= names


def test_the_server_binds_ipv6_in_brackets():
    assert ServerSettings.from_env({"CLIP_SERVICE_HOST": "::1", "CLIP_SERVICE_PORT": "6001"}).bind == "[::1]:6001"
    assert ServerSettings().bind == "0.0.0.0:5001"
