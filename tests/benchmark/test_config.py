"""Config resolution, overrides, validation and the run id."""

import pytest

from benchmark.config import ConfigError, build_config, recipe_overrides, run_id


def cfg_for(objective="dream", **kw):
    return build_config(objective, **kw)


def test_objective_defaults_follow_the_paper_tables():
    d = cfg_for("dream", preset="L")
    assert (d.train.weight_decay, d.objective.clip_weight, d.objective.gamma, d.objective.phi) == (0.04, 0.005, 0.5, 0.75)
    assert (d.schedule.name, d.schedule.sigma, d.schedule.low, d.schedule.high, d.schedule.warmup_epochs) == (
        "wm", 0.45, 0.0, 1.0, 36.0)
    assert d.lr == pytest.approx(8e-4)  # 1e-4 x 2048 / 256 (§4.1)
    f = cfg_for("fluid", preset="L")
    assert (f.schedule.name, f.schedule.sigma, f.schedule.low, f.train.weight_decay) == ("fx", 0.25, 0.7, 0.02)
    assert cfg_for("clip", preset="L").schedule.name == "none"
    assert cfg_for("repa", preset="L").objective.repa_weight == 0.5


def test_recipe_paper_changes_the_documented_fields():
    p = cfg_for("dream", preset="L", recipe="paper")
    assert (p.schedule.sigma, p.model.head_depth, p.model.head_width, p.train.epochs) == (0.55, 6, 0, 49)
    assert p.objective.image_proj == "none" and p.model.null_text == "learned"
    assert "schedule.sigma" not in recipe_overrides("paper", "fluid")  # sigma 0.55 is DREAM's only


def test_overrides_and_precedence():
    c = cfg_for("dream", schedule="uni", overrides={"schedule.sigma": "0.55", "train.steps": "7", "tasks": "lp"})
    assert c.schedule.name == "uni" and c.schedule.sigma == 0.55 and c.train.steps == 7 and c.tasks == ["lp"]
    assert cfg_for("dream", overrides={"tasks": ""}).tasks == []


@pytest.mark.parametrize("key,value,needle", [
    ("schedule.sigma", "-1", "schedule.sigma must be > 0"),
    ("schedule.sigm", "1", "Did you mean sigma"),
    ("train.steps", "abc", "expected a value of type int"),
    ("model.null_text", "zero", "choose one of: empty_caption, learned"),
    ("nosuch.x", "1", "sections:"),
])
def test_bad_values_give_one_clear_line(key, value, needle):
    with pytest.raises(ConfigError) as e:
        cfg_for("dream", overrides={key: value})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_run_id_is_stable_and_semantic():
    a, b = cfg_for("dream"), cfg_for("dream")
    assert run_id(a) == run_id(b)
    assert run_id(a).startswith("dream-wm-tiny-synthetic-") and run_id(a).endswith("-s0")
    assert run_id(cfg_for("dream", overrides={"out": "/elsewhere", "train.log_every": "3"})) == run_id(a)
    assert run_id(cfg_for("dream", overrides={"schedule.sigma": "0.55"})) != run_id(a)
    # tasks and eval settings do not change the trained weights: one run, evaluated later with more tasks
    assert run_id(cfg_for("dream", overrides={"tasks": "lp,none_such", "eval.cfg": "5"})) == run_id(a)
    assert run_id(cfg_for("dream", overrides={"seed": "1"})).endswith("-s1")


# ---------------------------------------------------------------- plugin-owned settings (issue 13)
def test_build_config_alone_applies_the_objectives_table():
    """No caller passes the objective's defaults: build_config("dream") is Table 21 (weight decay 0.04)."""
    assert build_config("dream").train.weight_decay == 0.04 and build_config("fluid").train.weight_decay == 0.02
    assert type(build_config("dream").objective).__name__ == "DreamSettings"


def test_objective_fields_are_those_of_the_selected_plugin():
    m = build_config("mar")
    assert m.objective.field_names() == ["diff_weight", "gamma"]
    with pytest.raises(ConfigError, match=r"Did you mean diff_weight\? Valid fields of objective 'mar': objective.diff_weight"):
        build_config("mar", overrides={"objective.clip_weight": "1"})
    assert build_config("repa", overrides={"objective.repa_layer": "3"}).objective.repa_layer == 3
    with pytest.raises(ConfigError, match="objective.repa_layer must be in"):  # the plugin's validate()
        build_config("repa", overrides={"objective.repa_layer": "99"})


def test_paper_values_live_on_the_fields():
    from benchmark.objectives.clip import ClipSettings

    assert ClipSettings.paper_values()["image_proj"] == "none"
    assert recipe_overrides("paper", "repa")["objective.repa_teacher"] == "clip_l"
    assert "objective.image_proj" not in recipe_overrides("paper", "mar")  # MAR has no CLIP head
    assert build_config("mar", preset="L", recipe="paper").schedule.group_size == 1


def test_task_settings_old_and_new_spelling_and_the_record():
    c = build_config("dream", overrides={"tasks": "lp,ft", "eval.ft_epochs": "8", "task.ft.blr": "0.5"})
    ft = c.task_settings("ft")
    assert (ft.epochs, ft.blr) == (8, 0.5) and c.to_dict()["task"]["ft"]["epochs"] == 8
    assert run_id(c) == run_id(build_config("dream", overrides={"tasks": "lp,ft"}))  # evaluation settings: same run
    with pytest.raises(ConfigError, match=r"Did you mean epochs\? Valid fields of task 'ft'"):
        build_config("dream", overrides={"task.ft.epochz": "3"})
    with pytest.raises(ConfigError, match="task.ft.layer_decay must be in"):
        build_config("dream", overrides={"tasks": "ft", "task.ft.layer_decay": "2"})


def test_records_round_trip_and_old_records_load():
    from benchmark.config import from_dict

    c = build_config("repa", overrides={"tasks": "ft", "task.ft.epochs": "7", "objective.repa_weight": "0.25"})
    back = from_dict(c.to_dict())
    assert back == c and run_id(back) == run_id(c)
    old = c.to_dict()  # a record from before: every objective field in one section, ft settings under eval
    old["objective"] = {**old["objective"], "clip_weight": 0.005, "phi": 0.75}
    old.pop("task")
    old["eval"]["ft_epochs"] = 9
    o = from_dict(old)
    assert o.objective == c.objective and o.task_settings("ft").epochs == 9
