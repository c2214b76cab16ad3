"""Help for every command and argument, default prompts in the synthetic vocabulary, a full disk in one line,
and a resumed record that no longer carries the previous attempt's error (issue 14)."""

from __future__ import annotations

import argparse
import errno

from benchmark.cli import build_parser, main
from benchmark.testing import small_overrides


def _actions(parser: argparse.ArgumentParser, name: str = "python -m benchmark"):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub, sp in a.choices.items():
                yield from _actions(sp, f"{name} {sub}")
        elif not isinstance(a, argparse._HelpAction):
            yield name, a


def test_every_command_and_argument_has_help():
    parser = build_parser()
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, a in _actions(parser) if not a.help]
    assert not missing, missing
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subs._choices_actions) == len(subs.choices) and all(h.help for h in subs._choices_actions)
    # the top-level description names every command
    assert all(c in parser.description for c in subs.choices), parser.description


def test_default_prompt_comes_from_the_synthetic_vocabulary(tmp_path):
    from benchmark.cli import default_prompts
    from benchmark.config import build_config, run_id
    from benchmark.data.synthetic import parse_caption
    from benchmark.records import RunRecord
    from benchmark.run import plugin_info

    cfg = build_config("dream", overrides={**small_overrides(), "out": str(tmp_path)})
    run_dir = tmp_path / run_id(cfg)
    run_dir.mkdir()
    RunRecord.create(run_dir, run_id(cfg), cfg.to_dict(), plugin_info(cfg))
    (prompt,) = default_prompts(run_dir)
    assert "white background" not in prompt
    assert parse_caption(prompt), prompt  # a caption the synthetic data set can say


def test_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    from benchmark.records import RunRecord

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(RunRecord, "save", full)
    argv = ["run", "--out", str(tmp_path), "--tasks", "none", "--steps", "1",
            *[a for k, v in small_overrides().items() for a in ("--set", f"{k}={v}")]]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "No space left on device" in err[0] and "record.json" in err[0], err


def test_resumed_record_drops_the_previous_error(tmp_path):
    from benchmark.config import build_config
    from benchmark.records import RunRecord
    from benchmark.run import plugin_info

    cfg = build_config("dream", overrides={**small_overrides(), "out": str(tmp_path)})
    rec = RunRecord.create(tmp_path, "r", cfg.to_dict(), plugin_info(cfg))
    rec.finish("interrupted", error="KeyboardInterrupt")
    again = RunRecord.create(tmp_path, "r", cfg.to_dict(), plugin_info(cfg))
    assert "error" not in again.data and again.data["previous_errors"] == ["KeyboardInterrupt"]
    assert again.data["status"] == "running" and again.data["attempt"] == 2
