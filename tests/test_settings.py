"""One declaration per setting, named presets, and where each command takes its defaults from."""

import importlib
import inspect
import json
import pkgutil
import typing

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

import components
from acgan_cli.flags import PRESET_SETTINGS, flag_help, given, preset_option, settings_flags, validated
from acgan_cli.main import Parser, build_parser, main
from acgan.cluster_settings import ClusterSettings
from acgan.data.prepare import PrepareConfig, continued_prepare_config
from acgan.errors import explain
from acgan.experiment import load_settings, prepare_experiment, train_config
from acgan.layout import EXPERIMENT_KEY
from acgan.presets import PRESETS, preset_defaults
from acgan.settings import (
    DataSettings,
    EvalSettings,
    EvaluationSettings,
    RunSettings,
    TrainingSettings,
    value_type,
)
from components.prepare_data import prepare_data
from pipelines.acgan_ensemble import pipeline_signature
from acgan.store import open_store
from acgan.training.loop import TrainConfig

# What `acgan run` trains: the demo preset's values, every other setting its field's default.
EMBEDDED_RUN = {name: value for name, value in preset_defaults(RunSettings, "demo").items() if name != "store"}
PAPER = PRESETS["paper"]  # Odena, Olah & Shlens (2016) at ImageNet's shape, nothing added: the fields' defaults
KFP_TYPES = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN", str: "STRING", list: "LIST"}


def parsed(*argv) -> dict:
    args = build_parser().parse_args([str(a) for a in argv])
    models = {"run": lambda a: validated(a, RunSettings), "submit": lambda a: validated(a, RunSettings),
              "train-split": lambda a: validated(a, TrainConfig),
              "prepare": lambda a: continued_prepare_config(open_store(a.store), given(a, PrepareConfig.model_fields))}
    return models[args.command](args).model_dump()


def test_acgan_run_without_flags_trains_the_embedded_run_as_before():
    assert parsed("run") == {**EMBEDDED_RUN, "store": "./acgan-store", "preset": "demo"}
    assert RunSettings(store="s").model_dump() == {**EMBEDDED_RUN, "store": "s", "preset": "demo"}


def test_cluster_commands_and_train_split_default_to_the_paper():
    submitted = parsed("submit", "--host", "https://kfp.example", "--store", "s3://acgan/x")
    assert submitted["preset"] == "paper" and {k: submitted[k] for k in PAPER} == PAPER
    trained = parsed("train-split", "--store", "s", "--split", 3)
    training = {k: v for k, v in PAPER.items() if k not in ("resolution", "classes_per_split")}  # the data's two
    assert trained["preset"] == "paper" and {k: trained[k] for k in training} == training
    prepared = parsed("prepare", "--store", "s")
    assert (prepared["preset"], prepared["resolution"], prepared["classes_per_split"]) == ("paper", 128, 10)


def test_a_flag_overrides_its_presets_value_and_leaves_the_rest():
    settings = parsed("run", "--preset", "paper", "--steps", 7, "--d-fake-class-loss", "false")
    assert settings["preset"] == "paper" and settings["steps"] == 7 and settings["d_fake_class_loss"] is False
    assert {k: settings[k] for k in PAPER if k not in ("steps", "d_fake_class_loss")} == \
        {k: v for k, v in PAPER.items() if k not in ("steps", "d_fake_class_loss")}
    assert parsed("train-split", "--store", "s", "--split", 0, "--preset", "demo", "--width", 0.5)["width"] == 0.5
    assert parsed("train-split", "--store", "s", "--split", 0, "--preset", "demo")["width"] == 0.125


def test_a_bad_preset_is_one_line_naming_the_flag_and_the_presets(capsys, tmp_path):
    for argv in (["run", "--store", tmp_path / "r"], ["compile", "-o", tmp_path / "p.yaml"],
                 ["train-split", "--store", tmp_path / "r", "--split", 0], ["prepare", "--store", tmp_path / "r"]):
        with pytest.raises(SystemExit) as exited:  # argparse rejects it, before anything runs
            main([str(a) for a in argv] + ["--preset", "imagenet"])
        assert exited.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--preset" in err and "'paper', 'demo'" in err, err
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValidationError) as e:  # a preset from the KFP UI or an edited experiment.json
        RunSettings(store="s", preset="imagenet")
    assert explain(e.value) == "--preset: 'imagenet' is not a preset: use one of paper, demo"


def test_every_preset_names_only_settings_and_its_values_validate():
    for name, values in PRESETS.items():
        assert set(values) <= set(DataSettings.model_fields) | set(TrainingSettings.model_fields), name
        resolved = RunSettings(store="s", preset=name)
        assert {k: getattr(resolved, k) for k in values} == values


def test_each_shared_setting_is_one_declaration():
    """TrainConfig, PrepareConfig and `acgan evaluate`'s EvalSettings take the run's settings from the same fields
    as RunSettings: same type, bounds, default and description, so they cannot drift apart."""
    for base, config in ((TrainingSettings, TrainConfig), (DataSettings, PrepareConfig),
                         (EvaluationSettings, EvalSettings)):
        for name, field in base.model_fields.items():
            assert repr(RunSettings.model_fields[name]) == repr(config.model_fields[name]) == repr(field), name
    paper_training = {k: v for k, v in PAPER.items() if k in TrainConfig.model_fields}
    assert TrainConfig().model_dump(include=set(PAPER)) == paper_training  # the fields' defaults are the paper's


def test_the_evaluation_settings_are_flags_of_acgan_evaluate_and_of_acgan_run():
    """`acgan evaluate` and `acgan run` make their evaluation flags from EvaluationSettings' fields: each flag's help
    is its field's description, and a value given reaches the validated settings."""
    parser = build_parser()
    for command in ("evaluate", "run"):
        flags = parser.command(command).flags()
        for name, field in EvaluationSettings.model_fields.items():
            assert flags[name].option_strings == [f"--{name.replace('_', '-')}"], (command, name)
            assert flags[name].help.startswith(field.description.replace("%", "%%")), (command, name)
    args = parser.parse_args(["evaluate", "--store", "s", "--pairs", "7", "--analyses", "joint, diversity"])
    settings = validated(args, EvalSettings)
    assert (settings.pairs, settings.analyses) == (7, ["joint", "diversity"])  # the evaluation orders them
    assert parsed("run", "--analyses", "fidelity")["analyses"] == ["fidelity"]


@pytest.mark.parametrize("value", ["", " , ", []])
def test_no_analysis_named_is_every_one(value):
    """Settings hold no list of the analyses (the evaluation's table is it): none named is every one."""
    assert RunSettings(store="s", analyses=value).analyses == [] == EvaluationSettings().analyses


def test_the_split_configs_and_experiment_json_record_the_preset_and_every_value(tmp_path):
    settings = RunSettings(store=str(tmp_path / "store"), preset="demo", steps=4, batch_size=8)
    assert prepare_experiment(settings) == [0, 1]
    store = open_store(settings.store)
    recorded = json.loads(store.read_bytes(EXPERIMENT_KEY))
    assert recorded.pop("checksum").startswith("sha256:")  # what training trusts is checksummed
    assert recorded == {**EMBEDDED_RUN, "store": settings.store, "preset": "demo", "steps": 4, "batch_size": 8}
    config = train_config(load_settings(store), 1)
    assert config.preset == "demo" and config.split == 1
    assert config.model_dump(include=set(TrainingSettings.model_fields)) == \
        settings.model_dump(include=set(TrainingSettings.model_fields))


@pytest.mark.parametrize("preset", ["paper", "demo"])
def test_compiled_parameters_are_the_spec_with_the_presets_defaults(capsys, tmp_path, preset):
    out = tmp_path / "p.yaml"
    argv = ["compile", "-o", out, "--image", "registry.example.com/acgan-ensemble:1"] + \
        ([] if preset == "paper" else ["--preset", preset])
    assert main([str(a) for a in argv]) == 0
    params = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(RunSettings.model_fields)
    defaults = preset_defaults(RunSettings, preset)
    for name, field in RunSettings.model_fields.items():
        kind = value_type(field.annotation)  # the values' type, as the command line reads them too
        optional = type(None) in typing.get_args(field.annotation)  # KFP has no None: a string, "" for None
        expected = "STRING" if optional else KFP_TYPES.get(kind, "STRING")
        assert params[name]["parameterType"] == expected, name
        if name != "store":  # the one parameter a run must give; KFP strings have no None
            assert params[name].get("defaultValue") == ("" if defaults[name] is None else defaults[name]), name
    # the component that records the settings takes exactly the spec's fields
    assert set(prepare_data.component_spec.inputs) == set(RunSettings.model_fields)


def test_the_averaged_generators_settings_reach_the_flags_the_pipeline_and_the_trainer(tmp_path):
    """ema_kimg and ema_rampup: flags of `acgan run` and `acgan train-split`, parameters of the compiled pipeline
    (off in both presets), and the split's TrainConfig through experiment.json."""
    assert parsed("run", "--ema-kimg", 2.5)["ema_kimg"] == 2.5
    assert parsed("train-split", "--store", "s", "--split", 0, "--ema-rampup", 0.1)["ema_rampup"] == 0.1
    for preset in PRESETS:
        assert RunSettings(store="s", preset=preset).ema_kimg == 0.0  # off: measured not to help (docs/experiments.md)
    parameters = pipeline_signature(RunSettings, "demo").parameters
    assert parameters["ema_kimg"].annotation is float and parameters["ema_kimg"].default == 0.0
    assert parameters["ema_rampup"].annotation is float and parameters["ema_rampup"].default == 0.05
    settings = RunSettings(store=str(tmp_path / "store"), steps=4, ema_kimg=3.0)
    prepare_experiment(settings)
    assert train_config(load_settings(open_store(settings.store)), 0).ema_kimg == 3.0


def test_the_objective_reaches_the_flags_the_pipeline_and_the_trainer(tmp_path):
    """objective: a flag of `acgan run` and `acgan train-split`, a parameter of the compiled pipeline (the paper's
    AC-GAN in both presets), and the split's TrainConfig through experiment.json; another value is refused in one
    line naming the flag and the values."""
    assert parsed("run", "--objective", "tac")["objective"] == "tac"
    assert parsed("train-split", "--store", "s", "--split", 0, "--objective", "tac")["objective"] == "tac"
    for preset in PRESETS:
        assert RunSettings(store="s", preset=preset).objective == "acgan"
    parameters = pipeline_signature(RunSettings, "demo").parameters
    assert parameters["objective"].annotation is str and parameters["objective"].default == "acgan"
    settings = RunSettings(store=str(tmp_path / "store"), steps=4, objective="tac")
    prepare_experiment(settings)
    assert train_config(load_settings(open_store(settings.store)), 0).objective == "tac"
    with pytest.raises(ValidationError) as e:
        RunSettings(store="s", objective="tacgan")
    assert explain(e.value).startswith("--objective: ") and "'acgan' or 'tac'" in explain(e.value)


def test_a_new_setting_is_one_field():
    """A setting added to the spec (here on a test-only copy) is a flag with its description, a pipeline parameter
    with its type and the preset's default, and reaches the validated settings, without another edit. The one
    other edit is the `prepare_data` component's signature, which the test above holds to the spec (kfp ships that
    function's source into the container, so its parameters are written out): two edits in all."""
    class Extended(RunSettings):
        generator_lr: float = Field(2e-4, gt=0, le=1, description="a test-only setting: G's learning rate")

    parser = Parser(prog="acgan test")
    preset_option(parser, "demo")
    flag = settings_flags(parser, Extended)["generator_lr"]
    assert flag.option_strings == ["--generator-lr"]
    assert flag.help == "a test-only setting: G's learning rate (default 0.0002)"
    args = parser.parse_args(["--store", "s", "--generator-lr", "0.001"])
    settings = validated(args, Extended)
    assert settings.generator_lr == 0.001 and settings.steps == 900  # and the preset still applies
    with pytest.raises(ValidationError, match="generator_lr"):
        validated(parser.parse_args(["--store", "s", "--generator-lr", "5"]), Extended)
    parameters = pipeline_signature(Extended, "demo").parameters
    assert list(parameters)[0] == "store" and set(parameters) == set(Extended.model_fields)
    assert parameters["generator_lr"].annotation is float and parameters["generator_lr"].default == 2e-4
    assert parameters["steps"].default == 900 and parameters["source"].default == ""  # KFP strings have no None


def test_a_new_evaluation_setting_is_one_field():
    """An evaluation setting added to EvaluationSettings (here on test-only copies) is a flag of `acgan evaluate`
    and of `acgan run`, a pipeline parameter, and reaches `acgan evaluate`'s validated settings. Its other edit is
    the signature of `prepare_data`, which the tests hold to the spec (above): two edits in all (the evaluation step
    reads the run's settings from the store, tests/pipelines/test_acgan_ensemble.py)."""
    class Evaluation(EvaluationSettings):
        fid_batch: int = Field(64, ge=1, le=4096, description="a test-only evaluation setting: FID's batch")

    class Run(RunSettings, Evaluation):
        pass

    class Evaluate(EvalSettings, Evaluation):
        pass

    for model in (Evaluation, Run):  # what `acgan evaluate` and `acgan run` make their flags from
        parser = Parser(prog="acgan test")
        flag = settings_flags(parser, model)["fid_batch"]
        assert flag.option_strings == ["--fid-batch"]
        assert flag.help == "a test-only evaluation setting: FID's batch (default 64)"
    args = parser.parse_args(["--store", "s", "--fid-batch", "32", "--analyses", "diversity"])
    assert validated(args, Run).fid_batch == 32
    evaluated = validated(args, Evaluate)
    assert (evaluated.fid_batch, evaluated.analyses, evaluated.real_per_class) == (32, ["diversity"], 200)
    parameters = pipeline_signature(Run, "demo").parameters
    assert parameters["fid_batch"].annotation is int and parameters["fid_batch"].default == 64
    assert parameters["analyses"].annotation is list and parameters["analyses"].default == []


def test_acgan_train_split_saves_the_preset_and_every_value_beside_the_checkpoints(capsys, digits_store):
    argv = ["train-split", "--store", digits_store.root, "--split", 0, "--steps", 2, "--checkpoint-every", 2,
            "--batch-size", 8, "--width", 0.0625, "--stats-samples-per-class", 2, "--stats-pairs", 1]
    assert main([str(a) for a in argv]) == 0
    saved = json.loads(digits_store.read_bytes("splits/split-00000/config.json"))["train"]
    assert saved == TrainConfig(preset="paper", split=0, steps=2, checkpoint_every=2, batch_size=8, width=0.0625,
                                stats_samples_per_class=2, stats_pairs=1).model_dump()
    assert saved["preset"] == "paper" and saved["d_dropout"] == 0.5 and saved["d_fake_class_loss"] is True


def test_every_command_help_shows_each_settings_description_and_default():
    """Each settings flag's help is its field's description and the default it has there: the preset's for the run's
    settings, the field's own for the cluster's and the evaluation's; `acgan rerun`'s cluster flags default to what
    the store recorded, so they show none. Every command's --help renders (a description's % once broke it)."""
    parser = build_parser()
    for command in parser.commands():
        assert parser.command(command).format_help()
    published = {k: v for k, v in preset_defaults(ClusterSettings, None).items() if k != "image"}
    cases = [("compile", ClusterSettings, published),  # --image: required, no image is published
             ("submit", ClusterSettings, preset_defaults(ClusterSettings, None)), ("rerun", ClusterSettings, {}),
             ("evaluate", EvalSettings, preset_defaults(EvalSettings, None)),
             ("run", RunSettings, preset_defaults(RunSettings, "demo"))]
    for command, model, defaults in cases:
        flags = parser.command(command).flags()
        for name, field in model.model_fields.items():
            if name in ("store", "preset"):  # --store: each command's own; --preset: its choices
                continue
            assert flags[name].option_strings == [f"--{name.replace('_', '-')}"], (command, name)
            shown = None if flags[name].nargs == 0 else defaults.get(name)  # a switch is off unless given
            assert flags[name].help == flag_help(field.description, shown), (command, name)
            assert field.description, (model.__name__, name)
    compile_help = {dest: a.help for dest, a in parser.command("compile").flags().items()}
    assert compile_help["parallelism"] == "training tasks (GPUs) at once (default 16)"
    assert compile_help["node_selector"].endswith("(default acgan.ai/pool=gpu)")
    run_help = {dest: a.help for dest, a in parser.command("run").flags().items()}
    assert run_help["steps"].endswith("(default 900)") and run_help["d_fake_class_loss"].endswith("(default false)")
    evaluate_help = {dest: a.help for dest, a in parser.command("evaluate").flags().items()}
    assert evaluate_help["accuracy_threshold"].endswith("the paper: 1%% (default 0.01)")


# Names that stand for something else where they are declared again, each with its reason.
OTHER_MEANINGS = {
    ("ModelConfig", "resolution"): "what the plan fixes: the size the data was prepared at",
    ("ModelConfig", "num_classes"): "the split's own class count, not the synthetic data set's",
    ("LocalSettings", "parallelism"): "kfp.local's tasks at once on this machine (default 2), not a cluster's",
    ("SampleSettings", "seed"): "the noise of one command's samples, not a run's data, weights and evaluation",
}
# Each command's flags that are no setting: what it acts on, and how it shows what it did.
OWN_FLAGS = {"prepare": {"store", "preset"}, "train-split": {"store", "preset"}, "run": {"store", "preset", "verbose"},
             "compile": {"output", "preset"}, "submit": {"store", "preset"}, "status": {"store", "json", "verify"},
             "rerun": {"store", "local", "verbose"}, "unlock": {"store", "split", "force"}, "plan": {"json"},
             "evaluate": {"store"}, "bench": {"device", "only", "out", "markdown"}, "compare": {"out"},
             "sample": {"store", "class_", "n", "out"}, "serve": {"store"}}


def _takes() -> dict[str, list[type[BaseModel]]]:
    """The settings models each command makes its other flags from."""
    from acgan.capacity import PlanInput
    from acgan.settings import CompileSetting, SampleSettings, ServeSettings
    from pipelines.launch_settings import KfpTarget, LocalSettings, SubmitSettings

    return {"prepare": [PrepareConfig], "train-split": [TrainConfig], "run": [RunSettings, LocalSettings],
            "compile": [ClusterSettings], "submit": [RunSettings, ClusterSettings, KfpTarget, SubmitSettings],
            "rerun": [LocalSettings, ClusterSettings, KfpTarget, SubmitSettings, CompileSetting],  # the cluster's
            # parallelism on a rerun: a local one's is the default (`acgan rerun --local` refuses cluster settings)
            "plan": [PlanInput], "evaluate": [EvalSettings], "sample": [SampleSettings], "serve": [ServeSettings]}


def test_every_flag_is_made_from_its_field():
    """Each command's flags are its own few (OWN_FLAGS) and one per field of the settings it takes, its help the
    field's description: no setting is a flag written out by hand, with a default of its own."""
    parser, takes = build_parser(), _takes()
    assert set(parser.commands()) == set(OWN_FLAGS)
    for command in parser.commands():
        flags = parser.command(command).flags()
        fields = {name: field for model in takes.get(command, []) for name, field in model.model_fields.items()
                  if name not in ("store", "preset")}
        assert set(flags) == OWN_FLAGS[command] | set(fields), command
        for name, field in fields.items():
            assert flags[name].help.startswith(flag_help(field.description, None)), (command, name)
            switch = value_type(field.annotation) is bool and name not in PRESET_SETTINGS
            assert (flags[name].nargs == 0) == switch, (command, name)  # true|false only where a preset sets it


def test_a_setting_no_preset_sets_is_a_switch():
    """`--raw` of `acgan sample` and `acgan evaluate` alike; `--no-preflight` turns off what is on by default."""
    parser = build_parser()
    for command in ("sample", "evaluate"):
        assert parser.command(command).flags()["raw"].option_strings == ["--raw"]
        args = parser.parse_args([command, "--store", "s", "--raw"] + (["--class", "1", "--out", "x.png"]
                                                                     if command == "sample" else []))
        assert args.raw is True
    assert validated(parser.parse_args(["evaluate", "--store", "s"]), EvalSettings).raw is False
    preflight = parser.command("submit").flags()["preflight"]
    assert preflight.option_strings == ["--no-preflight"]
    args = parser.parse_args(["submit", "--store", "s3://a/b", "--host", "https://kfp", "--no-preflight"])
    assert args.preflight is False


def _declarations() -> dict[str, list[tuple[str, str]]]:
    """Where each name is declared as a setting, read from the settings' own metadata: a field of a settings model
    (its class's own annotations, not those it inherits) and a parameter of a KFP component (its component spec).
    `acgan serve`'s and `acgan plan`'s models are their own commands' inputs and out of this count."""
    import acgan.cluster_settings
    import acgan.settings
    import pipelines.launch_settings
    from acgan.model import ModelConfig

    models = [value for module in (acgan.settings, acgan.cluster_settings, pipelines.launch_settings)
              for name, value in vars(module).items() if isinstance(value, type) and issubclass(value, BaseModel)
              and value.__module__ == module.__name__ and name != "ServeSettings"]
    found: dict[str, list[tuple[str, str]]] = {}
    for model in [*models, TrainConfig, PrepareConfig, ModelConfig]:
        for name in inspect.get_annotations(model):
            if name in model.model_fields and (model.__name__, name) not in OTHER_MEANINGS:
                found.setdefault(name, []).append(("field", model.__name__))
    for module in pkgutil.iter_modules(components.__path__):
        for value in vars(importlib.import_module(f"components.{module.name}")).values():
            for name in getattr(getattr(value, "component_spec", None), "inputs", None) or {}:
                found.setdefault(name, []).append(("component", value.name.replace("-", "_")))
    return found


def test_each_setting_is_declared_in_one_place():
    """Every setting of a run (its data, model, training and evaluation settings), of its cluster, of its
    submission, of `acgan evaluate`, `acgan sample`, `acgan train-split` and `acgan prepare` is declared once, as a
    field; kfp adds one parameter of the component that records a run's settings (prepare_data, whose source kfp
    runs as written). The store is named again where it is what a task or command acts on: every component's
    parameter, every command's --store."""
    from acgan.settings import ModelSettings

    takes = {command: models for command, models in _takes().items() if command not in ("serve", "plan")}
    names = {name for models in takes.values() for model in models for name in model.model_fields} - {"store"}
    declared = _declarations()
    for name in sorted(names):
        places = declared[name]
        expected = [("component", "prepare_data")] if name in RunSettings.model_fields else []
        if name == "split":  # the id of the split a per-split task prepares or trains
            expected = [("component", "prepare_split_data"), ("component", "train_split")]
        fields = [p for p in places if p[0] == "field"]
        assert len(fields) == 1 and sorted(p for p in places if p[0] != "field") == expected, (name, places)
    # The model's config takes the model settings' fields, declaring none of them again.
    assert not {name for name in ModelSettings.model_fields if ("field", "ModelConfig") in declared[name]}


def test_every_model_setting_reaches_the_models_config(digits_store):
    """model_config_for copies no field by name: each model setting, set to a value other than its default, is the
    split's ModelConfig's."""
    from acgan.settings import ModelSettings
    from acgan.training.loop import model_config_for

    other = {"noise_dim": 64, "width": 0.5, "d_width": 0.25, "d_dropout": 0.3, "d_noise_std": 0.2,
             "g_layout": "imagenet-start", "objective": "tac"}
    assert set(other) == set(ModelSettings.model_fields)  # a new model setting: add it here with a value
    model, members = model_config_for(digits_store, TrainConfig(split=1, **other))
    assert model.model_dump(include=set(other)) == other and model.num_classes == len(members) == 5
