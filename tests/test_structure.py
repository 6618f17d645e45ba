"""The code's shape, checked: folders import one way, each artifact's file names live in one
module, and each setting is declared once (its flags, overrides and saved form derive from it)."""
import ast
import dataclasses
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The layers, lowest first: a folder imports only from folders before it.
LAYERS = ("tworec", "live", "beam", "towers", "ranking", "search", "evaluation", "export", "serving", "report", "cli")


def _modules():
    for folder in LAYERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "generated" not in path.parts:
                yield folder, path


def _imported_folders(path: Path) -> set:
    """Folders of every ``tworec.X`` this module imports, at top level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tworec":
                out.add(parts[1] if len(parts) > 1 and parts[1] in LAYERS else "tworec")
    return out


def _folder_graph() -> dict:
    graph = {folder: set() for folder in LAYERS}
    for folder, path in _modules():
        graph[folder] |= _imported_folders(path) - {folder}
    return graph


def _cycle(graph):
    """A cycle as a list of folders, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_folders_and_layers_point_down():
    graph = _folder_graph()
    assert _cycle(graph) is None, f"import cycle: {' → '.join(_cycle(graph))}"
    upward = [(src, dst) for src, targets in graph.items() for dst in targets if LAYERS.index(dst) > LAYERS.index(src)]
    assert not upward, f"imports that point up the layers {LAYERS}: {upward}"
    assert graph["evaluation"] >= {"towers", "ranking"}  # evaluation judges them, never the reverse


def _artifact_file_names() -> dict:
    """{file name: the class that owns it} for every artifact class's file-name constants."""
    from tworec.evaluation.artifact import EvalResults
    from tworec.evaluation.policy import PolicyEvaluation
    from tworec.export.artifact import DeploymentRepository, GatewayArtifact
    from tworec.search.artifact import SearchArtifact
    from tworec.search.lexical import LexicalIndex
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.features import RankerTables
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.index import ItemIndex
    from tworec.training import TrainingFolder

    names = {}
    for cls in (RetrievalArtifact, RankerArtifact, RankerTables, GatewayArtifact, DeploymentRepository, EvalResults,
                ItemIndex, TrainingFolder, SearchArtifact, LexicalIndex, PolicyEvaluation):
        for attribute, value in vars(cls).items():
            values = value.values() if isinstance(value, dict) else [value]
            for value in values:
                if attribute.isupper() and isinstance(value, str) and ("." in value or "/" in value) and " " not in value:
                    assert value not in names, f"{value} is named by {names.get(value)} and {cls.__name__}"
                    names[value] = cls
    return names


def test_each_artifact_file_name_appears_in_exactly_one_module():
    import inspect

    names = _artifact_file_names()
    assert len(names) >= 15
    sources = {path: path.read_text() for _, path in _modules()}
    for name, owner in names.items():
        holders = [path for path, text in sources.items() if f'"{name}"' in text or f"'{name}'" in text]
        assert holders == [Path(inspect.getsourcefile(owner))], (name, holders)


def _config_classes():
    from tworec.beam.config import DataConfig, SplitConfig, SyntheticConfig
    from tworec.cli.pipeline import PipelineConfig
    from tworec.ranking.config import RankerConfig
    from tworec.report.config import ReportConfig
    from tworec.serving.config import GatewayConfig, SecurityConfig, ServeConfig
    from tworec.towers.config import RetrievalConfig
    from tworec.towers.index import IndexConfig

    return (DataConfig, SplitConfig, SyntheticConfig, RetrievalConfig, RankerConfig, IndexConfig, ServeConfig,
            GatewayConfig, SecurityConfig, ReportConfig, PipelineConfig)


def test_every_setting_has_its_reason():
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("command,config_path,prefix", [
    ("data", "tworec.beam.config:DataConfig", ""),
    ("train-retrieval", "tworec.towers.config:RetrievalConfig", ""),
    ("train-ranker", "tworec.ranking.config:RankerConfig", ""),
    ("serve", "tworec.serving.config:ServeConfig", ""),
    ("pipeline", "tworec.cli.pipeline:PipelineConfig", ""),
])
def test_a_command_has_a_flag_for_every_setting_of_its_config(command, config_path, prefix):
    import argparse
    import importlib

    from tworec import settings
    from tworec.cli.main import build_parser

    module, name = config_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {s for a in sub._actions for s in a.option_strings}
    derived = settings.flag_names(cls, prefix)
    assert set(derived) <= flags and len(derived) == len(set(derived))
    # Parsing no flags gives the config's defaults: the flags carry them, nothing else does.
    required = [f"--{f.name}" for f in dataclasses.fields(cls) if f.metadata.get("required")]
    argv = [command, *[x for flag in required for x in (flag, "somewhere")], *{
        "data": ["--out", "x"], "train-retrieval": ["--data", "x", "--out", "y"],
        "train-ranker": ["--data", "x", "--retrieval", "y", "--out", "z"], "pipeline": ["--out", "x"]}.get(command, [])]
    parsed = settings.from_flags(cls, parser.parse_args(argv))
    assert parsed == dataclasses.replace(cls(), **{f.name: "somewhere" for f in dataclasses.fields(cls)
                                                   if f.metadata.get("required")})


def test_adding_a_setting_is_one_edit():
    """For three config classes chosen at random: a new field with its help is at once a flag, a
    ``--set`` path, a value read from the command line and a saved setting that loads back."""
    import argparse

    from tworec import settings
    from tworec.settings import setting

    chosen = random.Random().sample(_config_classes()[:-1], 3)
    for cls in chosen:
        extended = dataclasses.make_dataclass(cls.__name__, [("brand_new_knob", int, setting(7, "a new setting"))],
                                              bases=(cls,), frozen=True)
        parser = argparse.ArgumentParser()
        settings.add_flags(parser, extended)
        required = [x for f in dataclasses.fields(cls) if f.metadata.get("required")
                    for x in (f"--{f.name.replace('_', '-')}", "somewhere")]
        config = settings.from_flags(extended, parser.parse_args(["--brand-new-knob", "9", *required]))
        assert config.brand_new_knob == 9, cls
        assert settings.override(config, "brand_new_knob=11").brand_new_knob == 11
        assert settings.from_dict(extended, settings.to_dict(config)) == config
        assert extended().brand_new_knob == 7


def test_set_reaches_any_setting_of_the_pipeline_and_names_the_closest_on_a_typo():
    from tworec import settings
    from tworec.cli.pipeline import PipelineConfig

    config = PipelineConfig()
    for path, text, read in (("retrieval.temperature", "0.1", lambda c: c.retrieval.temperature),
                             ("data.split.seed", "3", lambda c: c.data.split.seed),
                             ("data.rating_range", "0,10", lambda c: (c.data.rating_range.low, c.data.rating_range.high)),
                             ("ranker.deep_layers", "32,16", lambda c: c.ranker.deep_layers),
                             ("retrieval.new_item_offset", "none", lambda c: c.retrieval.new_item_offset)):
        changed = settings.override(config, f"{path}={text}")
        assert read(changed) == {"0.1": 0.1, "3": 3, "0,10": (0, 10), "32,16": (32, 16), "none": None}[text]
    with pytest.raises(settings.SettingError, match="did you mean retrieval.temperature"):
        settings.override(config, "retrieval.temprature=0.1")
    with pytest.raises(settings.SettingError, match="encoder_mode must be one of"):
        settings.override(config, "retrieval.encoder_mode=sideways")


def test_an_unknown_option_is_an_error_naming_the_closest_never_handed_to_beam(capsys):
    from tworec.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["pipeline", "--out", "/nonexistent", "--rating-rage", "0,10"])
    assert exit_.value.code == 2
    assert "unknown option --rating-rage (did you mean --rating-range?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "--out", "/nonexistent", "--runer=DataflowRunner"])
    assert "did you mean --runner" in capsys.readouterr().err


def test_no_flag_of_any_command_can_replace_the_function_that_runs_it():
    """Each subcommand's function sits in ``args.handler``; a flag with that destination (as
    `tworec report --run` once had with ``run``) would overwrite it with a string."""
    import argparse

    from tworec.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(commands) > 10
    for name, sub in commands.items():
        assert callable(sub.get_default("handler")), name
        assert "handler" not in {a.dest for a in sub._actions}, name
    args = parser.parse_args(["report", "--run", "runs/demo"])
    assert callable(args.handler) and args.run == "runs/demo"
