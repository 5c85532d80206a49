"""The CLI is generated from the config models: every config key is an option, declared once."""

import typer
from typer.testing import CliRunner

from medfm.cli import SWEEP_PROBE_SHORTCUTS, app
from medfm.config import ExtractConfig, FinetuneConfig, PrepareConfig, ProbeConfig, ReportConfig, SweepConfig
from medfm.config_cli import settings_from_options

COMMANDS = {"extract": ExtractConfig, "prepare": PrepareConfig, "probe": ProbeConfig, "sweep": SweepConfig,
            "report": ReportConfig, "finetune": FinetuneConfig}


def _command(name):
    return typer.main.get_command(app).commands[name]


def test_every_config_key_is_an_option_with_the_fields_help():
    for name, config in COMMANDS.items():
        params = {p.name: p for p in _command(name).params}
        for key, field in config.model_fields.items():
            assert key in params, f"medfm {name} lacks an option for config key {key}"
            assert field.description, f"{config.__name__}.{key} has no help text"
            assert params[key].help.replace("\\[", "[").startswith(field.description), (name, key)
        assert {"config", "as_json"} <= set(params)


def test_a_new_config_key_needs_no_cli_edit():
    """A field added to a model (here a subclass, registered like the real commands) is an option at once."""
    from pydantic import Field

    from medfm.config_cli import config_command

    class Widened(ReportConfig):
        colour: str = Field("blue", description="a key that cli.py never heard of")

    seen = {}
    demo = typer.Typer()

    @config_command(demo, Widened)
    def show(settings):
        """Echo the loaded config."""
        seen.update(Widened.load(None, settings).to_dict())

    @demo.command()
    def other():  # a second command, so typer keeps sub-command names
        pass

    result = CliRunner().invoke(demo, ["show", "--colour", "red", "--bootstrap", "7"])
    assert result.exit_code == 0, result.output
    assert seen["colour"] == "red" and seen["bootstrap"] == 7 and seen["out"] == "medfm-report"


def _parse(name, argv, borrow=None):
    ctx = _command(name).make_context(name, argv)
    return COMMANDS[name].load(None, settings_from_options(COMMANDS[name], ctx.params, borrow))


def test_options_of_every_shape_parse_into_the_model():
    cfg = _parse("sweep", ["--backbones", "a,b", "--fractions", "0.1,1", "--weights", "a=random", "--weights", "b=x.pt",
                           "--unfreeze", "1,all", "--plan", "--finetune", "epochs=2", "--finetune", "grad_clip=none",
                           "--probe", "ks=5,11", "--epochs", "3"],
                 {"probe": (ProbeConfig, SWEEP_PROBE_SHORTCUTS)})
    assert cfg.backbones == ["a", "b"] and cfg.fractions == [0.1, 1.0]
    assert cfg.weights == {"a": "random", "b": "x.pt"} and cfg.unfreeze == [1, "all"] and cfg.plan_only
    assert cfg.finetune == {"epochs": "2", "grad_clip": None}
    assert cfg.probe == {"ks": "5,11", "epochs": 3}
    assert ProbeConfig(cache="c", **cfg.probe).ks == [5, 11]  # the probe model splits the list it receives
    ft = _parse("finetune", ["--backbone", "m", "--dataset", "d", "--unfreeze", "all", "--no-amp", "--lr", "3e-5"])
    assert ft.unfreeze == "all" and ft.amp is False and ft.lr == 3e-5
    ex = _parse("extract", ["--backbone", "m", "--dataset", "d", "--batch-size", "auto", "--skip-bad", "--tokens"])
    assert ex.batch_size == "auto" and ex.skip_bad and ex.tokens
    assert _parse("extract", ["--backbone", "m", "--dataset", "d"]) == ExtractConfig(backbone="m", dataset="d")


def test_missing_required_options_say_which_and_show_an_example(cli):
    line = cli.error("finetune", "--unfreeze", "2")
    assert "missing --backbone and --dataset" in line
    assert "e.g. `medfm finetune --backbone" in line and "Field required" not in line
