"""Environment families: registering one, third-party families through entry points, clashes,
broken plugins, did-you-mean, and `redumix list envs` grouped by family."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from envs import Env, EnvPluginError, Problem, Verdict, available_envs, env_families, get_env, problem_id
from envs.registry import (
    family_of,
    isolated_env_registry,
    register_env_family,
    registered_env_family,
    unregister_env_family,
)
from harness.cli import main

PLUGIN_MODULES = ("acme_envs", "acme_register", "acme_broken_inside")


class ToyEnv:
    """Questions "a+b?" graded by exact match."""

    has_verifier = True

    def __init__(self, name: str, extraction: str = "strict", offset: int = 0) -> None:
        self.name, self.extraction, self.offset = name, extraction, int(offset)

    def problems(self, n: int, seed: int, start: int = 0) -> list[Problem]:
        return [Problem(env=self.name, problem_id=problem_id(self.name, seed, i), index=i, seed=seed,
                        question=f"{i}+{seed + self.offset}?", gold=str(i + seed + self.offset), metadata={})
                for i in range(start, start + n)]

    def user_prompt(self, problem: Problem) -> str:
        return problem.question

    def verify(self, problem: Problem, completion: str) -> Verdict:
        ok = completion.strip() == problem.gold
        return Verdict(answer=completion.strip(), score=float(ok), correct=ok, format_ok=True, error=None)

    def feedback(self, problem, verdict, policy, templates=None) -> str:
        return "right" if verdict.correct else "wrong"

    def config(self) -> dict:
        return {"offset": self.offset}


class ToyFamily:
    description = "toy additions for the registry tests"

    def __init__(self, *names: str) -> None:
        self._names = names or ("toy_add", "toy_add_big")

    def names(self) -> list[str]:
        return list(self._names)

    def make(self, name: str, /, *, extraction: str = "strict", **config) -> ToyEnv:
        return ToyEnv(name, extraction=extraction, **config)


@pytest.fixture(autouse=True)
def registry_left_as_found():
    """Every test leaves the registry (and sys.modules) as it found them."""
    before = [(f.name, f.origin, f.envs) for f in env_families()]
    yield
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)
    assert [(f.name, f.origin, f.envs) for f in env_families()] == before


def fake_entry_points(monkeypatch, *specs: tuple[str, str]) -> list[str]:
    """Make `importlib.metadata.entry_points` offer `specs` (name, value) in group redumix.envs;
    returns a list that records each lookup's group."""
    calls: list[str] = []
    entry_points = importlib.metadata.EntryPoints(
        importlib.metadata.EntryPoint(name, value, "redumix.envs") for name, value in specs
    )

    def lookup(**params):
        calls.append(params.get("group"))
        return entry_points.select(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", lookup)
    return calls


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


TOY_MODULE = """
    from tests.test_env_registry import ToyFamily

    FAMILY = ToyFamily("acme_sum", "acme_product")
"""


# -- registering inside the process ----------------------------------------------------


def test_reasoning_gym_is_a_family_and_names_are_unchanged():
    families = {f.name: f for f in env_families()}
    assert families["reasoning-gym"].origin == "built in"
    assert "basic_arithmetic" in families["reasoning-gym"].envs
    assert family_of("basic_arithmetic") == "reasoning-gym"
    assert available_envs() == sorted(env for f in families.values() for env in f.envs)
    assert get_env("basic_arithmetic", min_terms="2", max_terms="2").name == "basic_arithmetic"


def test_a_registered_family_is_found_by_get_env_and_forgotten_after():
    assert "toy_add" not in available_envs()
    with registered_env_family("toy", ToyFamily()):
        assert {"toy_add", "toy_add_big", "basic_arithmetic"} <= set(available_envs())
        assert family_of("toy_add") == "toy"
        env = get_env("toy_add", offset="3", extraction="flexible")
        assert isinstance(env, Env) and env.extraction == "flexible" and env.config() == {"offset": 3}
        problem = env.problems(1, seed=1)[0]
        assert problem.problem_id == "toy_add-s1-0" and env.verify(problem, "4").correct
    assert "toy_add" not in available_envs()
    with pytest.raises(ValueError, match="Unknown environment 'toy_add'"):
        get_env("toy_add")


def test_register_and_unregister_by_hand():
    family = register_env_family("toy", ToyFamily())
    try:
        assert register_env_family("toy", family) is family  # the same object again: nothing to do
        with pytest.raises(ValueError, match=r"family 'toy' is already registered \(built in\)"):
            register_env_family("toy", ToyFamily("other"))
        with pytest.raises(ValueError, match=r"Unknown environment family 'tyo'\. Did you mean: toy\?"):
            unregister_env_family("tyo")
    finally:
        assert unregister_env_family("toy") is family
    with pytest.raises(TypeError, match="names\\(\\) and make"):
        register_env_family("toy", object())


def test_list_envs_groups_by_family_and_pipes_names(capsys):
    with registered_env_family("toy", ToyFamily()):
        assert main(["list", "envs", "--format", "grouped"]) == 0
        lines = capsys.readouterr().out.splitlines()
        heading = lines.index("toy (built in, 2 environments): toy additions for the registry tests")
        assert lines[heading + 1:heading + 3] == ["  toy_add", "  toy_add_big"]
        assert any(line.startswith("reasoning-gym (built in, ") for line in lines)
        assert "  basic_arithmetic" in lines

        # Piped (as under capsys) or --format names: the names alone, one a line, as before.
        for args in (["list", "envs"], ["list", "envs", "--format", "names"]):
            assert main(args) == 0
            names = capsys.readouterr().out.splitlines()
            assert names == available_envs() and {"toy_add", "basic_arithmetic"} <= set(names)


def test_unknown_name_suggests_the_closest_across_families():
    with registered_env_family("toy", ToyFamily()):
        with pytest.raises(ValueError, match=r"Unknown environment 'toy_ad'\. Did you mean: toy_add\b"):
            get_env("toy_ad")
        with pytest.raises(ValueError, match=r"Did you mean: basic_arithmetic\b"):
            get_env("basic_arithmatic")
    with pytest.raises(ValueError, match="not supported: it mixes tasks"):
        get_env("composite")


def test_two_families_offering_one_name_is_an_error_naming_both(capsys):
    with registered_env_family("shadow", ToyFamily("toy_x", "basic_arithmetic")):
        for lookup in (lambda: get_env("toy_x"), available_envs):
            with pytest.raises(EnvPluginError) as info:
                lookup()
            message = str(info.value)
            assert "'basic_arithmetic' is offered by two families" in message
            assert "'reasoning-gym' (built in)" in message and "'shadow' (built in)" in message
        assert main(["list", "envs"]) == 2
        assert "is offered by two families" in capsys.readouterr().err
    assert get_env("basic_arithmetic").name == "basic_arithmetic"


def test_a_family_building_the_wrong_thing_is_refused():
    class Wrong(ToyFamily):
        def make(self, name, /, **config):
            return ToyEnv("toy_add") if name == "toy_add_big" else object()

    with registered_env_family("wrong", Wrong()):
        with pytest.raises(EnvPluginError, match=r"'wrong' \(built in\) built environment 'toy_add' when asked "
                                                 r"for 'toy_add_big'"):
            get_env("toy_add_big")
        with pytest.raises(EnvPluginError, match="built object when asked for 'toy_add'"):
            get_env("toy_add")


# -- entry points ----------------------------------------------------------------------


def install_fake_distribution(folder: Path, monkeypatch, entry_point: str) -> None:
    """A dist-info folder of "acme-envs 1.0" declaring `entry_point`, put on sys.path."""
    dist_info = folder / "acme_envs-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-envs\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[redumix.envs]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(folder))


def test_an_installed_distribution_s_entry_point_is_loaded(tmp_path, monkeypatch):
    """A real (temporary) dist-info folder on sys.path, found by importlib.metadata itself."""
    write_module(tmp_path, "acme_envs", TOY_MODULE)
    install_fake_distribution(tmp_path, monkeypatch, "acme = acme_envs:FAMILY")
    with isolated_env_registry():
        assert get_env("acme_sum").name == "acme_sum"
        families = {f.name: f for f in env_families()}
        assert families["acme"].envs == ("acme_product", "acme_sum")
        assert families["acme"].origin == "entry point 'acme = acme_envs:FAMILY' of acme-envs 1.0"
        assert main(["list", "envs", "--format", "grouped"]) == 0
    assert "acme_sum" not in available_envs()


def test_entry_points_are_loaded_lazily_and_once(tmp_path, monkeypatch):
    write_module(tmp_path, "acme_envs", TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = fake_entry_points(monkeypatch, ("acme", "acme_envs:FAMILY"))
    with isolated_env_registry():
        assert calls == [] and "acme_envs" not in sys.modules
        assert family_of("acme_product") == "acme"
        assert calls == ["redumix.envs"]
        get_env("acme_sum")
        available_envs()
        assert calls == ["redumix.envs"]


@pytest.mark.parametrize(
    ("value", "family_name"),
    [
        ("acme_envs:FAMILY", "acme"),  # a family: registered under the entry point's name
        ("acme_envs:make_family", "acme"),  # a function returning one: the same
        ("acme_envs:AcmeFamily", "acme"),  # a class: built with no arguments
        ("acme_register", "acme-registered"),  # a module that registers its family on import
        ("acme_register:setup", "acme-registered"),  # a function that registers one
        ("acme_register:FAMILY", "acme-registered"),  # a family its module registers itself
    ],
)
def test_every_kind_of_entry_point_target(value, family_name, tmp_path, monkeypatch):
    write_module(tmp_path, "acme_envs", TOY_MODULE + """
    def make_family():
        return ToyFamily("acme_sum")

    class AcmeFamily(ToyFamily):
        def __init__(self):
            super().__init__("acme_sum")
    """)
    write_module(tmp_path, "acme_register", """
        from envs import register_env_family
        from tests.test_env_registry import ToyFamily

        FAMILY = register_env_family("acme-registered", ToyFamily("acme_sum"))

        def setup():
            pass  # importing the module registered it
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, ("acme", value))
    with isolated_env_registry():
        assert family_of("acme_sum") == family_name
        origins = {f.name: f.origin for f in env_families()}
        assert origins[family_name] == f"entry point 'acme = {value}'"
        assert get_env("acme_sum").name == "acme_sum"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("acme_missing_module:FAMILY", "failed to load: ModuleNotFoundError: No module named 'acme_missing_module'"),
        ("acme_broken_inside:FAMILY", "failed to load: RuntimeError: the plugin broke while importing"),
        ("acme_envs:NOT_THERE", "failed to load: AttributeError"),
        ("acme_envs:NUMBER", "is not an environment family: it names a int"),
        ("acme_envs:returns_text", "is not an environment family: calling it returned a str"),
        ("acme_envs:does_nothing", "is not an environment family: loading it registered no environment family"),
    ],
)
def test_a_broken_entry_point_is_one_clear_line(value, says, tmp_path, monkeypatch, capsys):
    write_module(tmp_path, "acme_envs", TOY_MODULE + """
    NUMBER = 3

    def returns_text():
        return "acme"

    def does_nothing():
        return None
    """)
    write_module(tmp_path, "acme_broken_inside", """
        raise RuntimeError("the plugin broke\\nwhile importing")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, ("acme", value), ("good", "acme_envs:FAMILY"))
    with isolated_env_registry():
        for _ in range(2):  # still an error the second time: a broken plugin is not skipped silently
            with pytest.raises(EnvPluginError) as info:
                get_env("basic_arithmetic")
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"Environment plugin entry point 'acme = {value}' (group redumix.envs)")
            assert says in message and "Fix: " in message and "uninstall" in message
        assert main(["list", "envs"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"redumix list: error: Environment plugin entry point 'acme = {value}'")


def test_a_broken_distribution_is_named_with_the_pip_commands_that_fix_it(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, monkeypatch, "acme = acme_missing_module:FAMILY")
    with isolated_env_registry():
        with pytest.raises(EnvPluginError) as info:
            available_envs()
    assert str(info.value) == (
        "Environment plugin entry point 'acme = acme_missing_module:FAMILY' of acme-envs 1.0 (group redumix.envs) "
        "failed to load: ModuleNotFoundError: No module named 'acme_missing_module'. "
        "Fix: pip install --force-reinstall acme-envs, or pip uninstall acme-envs to go on without it."
    )


def test_a_plugin_family_whose_names_fail_is_named(tmp_path, monkeypatch):
    write_module(tmp_path, "acme_envs", """
        class Family:
            def names(self):
                raise KeyError("config.yaml")

            def make(self, name, /, **config):
                raise AssertionError

        FAMILY = Family()
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, ("acme", "acme_envs:FAMILY"))
    with isolated_env_registry():
        with pytest.raises(EnvPluginError, match=r"family 'acme' \(entry point 'acme = acme_envs:FAMILY'\) failed "
                                                 r"to list its environments: KeyError: 'config.yaml'\. Fix: "):
            available_envs()


def test_an_entry_point_clashing_with_reasoning_gym_names_both(tmp_path, monkeypatch):
    write_module(tmp_path, "acme_envs", """
        from tests.test_env_registry import ToyFamily

        FAMILY = ToyFamily("acme_sum", "basic_arithmetic")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(monkeypatch, ("acme", "acme_envs:FAMILY"))
    with isolated_env_registry():
        with pytest.raises(EnvPluginError, match=r"'basic_arithmetic' is offered by two families: 'acme' "
                                                 r"\(entry point 'acme = acme_envs:FAMILY'\) and 'reasoning-gym' "
                                                 r"\(built in\)\. Fix: "):
            get_env("acme_sum")
