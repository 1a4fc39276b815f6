"""The schema-driven form: edits change the config, configs change the form, invalid input
is marked at its field with the reason and keeps the run button off."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PySide6.QtCore import Qt

from engine.config import HeadConfig, load_config, save_config, set_value, setting
from mgd_gui.setup.editors import (BoolEditor, ChoiceEditor, ListEditor, MappingEditor, MultiChoiceEditor,
                                   NumberEditor, PathEditor, TextEditor, make_editor)
from mgd_gui.setup.table_editor import TableEditor


def type_into(qtbot, editor, text: str) -> None:
    editor.edit.clear()
    qtbot.keyClicks(editor.edit, text)


def test_editing_the_form_changes_the_config(qtbot, window):
    form = window.form
    type_into(qtbot, form.editor("student.schedule.epochs"), "7")
    assert form.config().student.schedule.epochs == 7

    type_into(qtbot, form.editor("teacher.schedule.milestones"), "3, 5")
    assert form.config().teacher.schedule.milestones == [3, 5]

    type_into(qtbot, form.editor("distiller.w_ce"), "0.25")
    assert form.config().distiller.w_ce == 0.25
    form.editor("distiller.w_ce").edit.clear()
    qtbot.keyClicks(form.editor("distiller.w_ce").edit, " ")
    assert form.config().distiller.w_ce is None  # empty = auto

    arch = form.editor("student.arch").combo
    arch.setCurrentIndex(arch.findData("wrn_16_1"))
    assert form.config().student.arch == "wrn_16_1"

    mode = form.editor("granularity.mode").combo
    mode.setCurrentIndex(mode.findData("granularity"))
    assert form.config().granularity.mode == "granularity"

    form.editor("export.formats").boxes["onnx"].setChecked(False)
    assert form.config().export.formats == ["weights", "torchscript"]
    form.editor("data.download").box.setChecked(True)
    assert form.config().data.download is True

    table = form.editor("granularity.heads")
    table.add_button.click()
    assert [(h.dim, h.temperature) for h in form.config().granularity.heads] == [(64, 2.0), (256, 8.0), (256, 8.0)]
    table.table.item(2, 0).setText("512")
    table.table.item(2, 1).setText("16")
    assert form.config().granularity.heads[2] == HeadConfig(512, 16.0)
    table.table.selectRow(0)
    table.remove_button.click()
    assert [h.dim for h in form.config().granularity.heads] == [256, 512]


def test_loading_a_config_changes_the_form(window, tmp_path):
    from mgd_gui import paths

    cfg = load_config(paths.demo_preset())
    for key, value in (("name", "pair"), ("teacher.arch", "wrn_40_2"), ("student.schedule.lr", None),
                       ("granularity.heads", [{"dim": 32, "temperature": 1.5}]), ("data.batch_size", 128),
                       ("evaluation.noise_levels", [0.0, 0.25]), ("distiller.options", {"hint_layer": 2})):
        cfg = set_value(cfg, key, value)
    path = tmp_path / "pair.yaml"
    save_config(cfg, path)
    assert window.load_path(path)
    form = window.form
    assert form.editor("name").edit.text() == "pair"
    assert form.editor("teacher.arch").combo.currentData() == "wrn_40_2"
    assert form.editor("student.schedule.lr").edit.text() == ""
    assert form.editor("student.schedule.lr").edit.placeholderText() == "auto"
    assert form.editor("data.batch_size").edit.text() == "128"
    assert form.editor("evaluation.noise_levels").edit.text() == "0.0, 0.25"
    assert form.editor("distiller.options").value() == {"hint_layer": 2}  # kept until its schema is known
    table = form.editor("granularity.heads").table
    assert table.rowCount() == 1 and table.item(0, 0).text() == "32" and table.item(0, 1).text() == "1.5"
    assert window.presets.currentText() == "(custom)"
    assert form.config() == cfg


def test_saved_yaml_is_what_the_cli_reads(window, tmp_path):
    window.form.set_field("student.schedule.epochs", 3)
    path = tmp_path / "out.yaml"
    window.save_to(path)
    assert load_config(path) == window.form.config()
    assert window.current_file == path


def test_presets_list_every_yaml(window):
    from mgd_gui import paths

    names = [window.presets.itemText(i) for i in range(1, window.presets.count())]
    assert names == [p.stem for p in paths.preset_paths()] and names[0] == "demo"
    window.form.set_field("seed", 5)
    assert window.presets.currentText() == "(custom)"
    window.presets.preset_chosen.emit(str(paths.demo_preset()))
    assert window.form.config().seed == 0 and window.presets.currentText() == "demo"


def test_invalid_input_is_marked_and_disables_run(qtbot, window):
    form, run = window.form, window.actions_["run"]
    assert run.isEnabled()

    type_into(qtbot, form.editor("data.batch_size"), "0")
    assert "below the minimum 1" in form.error_text("data.batch_size")
    assert form.editor("data.batch_size").edit.property("invalid") is True
    assert not run.isEnabled()
    assert form.sections.item(1).text().endswith("⚠")  # the Data section shows it has a problem

    type_into(qtbot, form.editor("data.batch_size"), "abc")
    assert "not a whole number" in form.error_text("data.batch_size")
    assert not run.isEnabled()

    type_into(qtbot, form.editor("data.batch_size"), "32")
    assert form.error_text("data.batch_size") == ""
    assert form.editor("data.batch_size").edit.property("invalid") is False
    assert run.isEnabled() and form.config().data.batch_size == 32

    type_into(qtbot, form.editor("student.schedule.milestones"), "13, 10")
    assert "must be increasing" in form.error_text("student.schedule.milestones")
    assert not run.isEnabled()
    type_into(qtbot, form.editor("student.schedule.milestones"), "10, 13")
    assert run.isEnabled()

    table = form.editor("granularity.heads").table
    table.item(0, 0).setText("0")
    assert "row 1, code width: 0 is below the minimum 1" in form.error_text("granularity.heads")
    assert not run.isEnabled()
    table.item(0, 0).setText("64")
    assert run.isEnabled()

    dataset = form.editor("data.dataset").combo
    dataset.setCurrentIndex(dataset.findData("cifar100"))
    assert "needs a folder" in form.error_text("data.root")
    assert not run.isEnabled()
    window.start_run()  # the slot refuses too, not only the button
    assert not window.runner.active


def test_a_missing_device_is_refused(window):
    window.devices.set_found([])  # the probe found no GPU
    window.form.set_field("device", "cuda:3")
    window.lookups.config_changed(window.form.config())
    assert "not available on this machine" in window.form.errors()["device"]
    assert not window.actions_["run"].isEnabled()
    assert "not available" in window.form.problems.text()
    window.form.set_field("device", "cpu")
    window.lookups.config_changed(window.form.config())
    assert window.actions_["run"].isEnabled()


def test_an_incompatible_teacher_checkpoint_is_refused_before_the_run(qtbot, make_window, tmp_path):
    window = make_window(probe=True)
    bogus = tmp_path / "teacher.pt"
    bogus.write_text("not a checkpoint")
    window.form.set_field("teacher.checkpoint", str(bogus))
    qtbot.waitUntil(lambda: window.form.error_text("teacher.checkpoint") != "", timeout=60000)
    assert "teacher.pt" in window.form.error_text("teacher.checkpoint")
    assert not window.actions_["run"].isEnabled()
    assert not window.form.group("teacher.schedule").isEnabled()  # loaded teacher: no schedule
    window.form.set_field("teacher.checkpoint", None)
    qtbot.waitUntil(lambda: window.actions_["run"].isEnabled(), timeout=10000)


def test_distiller_options_are_typed_fields_with_help(window):
    from engine.distillers import distiller_class

    form = window.form
    form.set_field("distiller.name", "fitnet")
    form.set_options_schema("fitnet", distiller_class("fitnet").Options)
    editor = form.editor("distiller.options")
    assert set(editor.editors) == {"hint_layer", "kernel_size"}
    hint = editor.editors["hint_layer"]
    assert isinstance(hint, NumberEditor) and "hint map" in hint.toolTip()
    assert isinstance(editor.editors["kernel_size"], ChoiceEditor)
    assert editor.value() == {"hint_layer": 2, "kernel_size": None}  # the baseline's declared defaults
    hint.edit.setText("1.5")
    hint.edit.textEdited.emit("1.5")
    assert "whole number" in form.error_text("distiller.options")
    assert not window.actions_["run"].isEnabled()
    hint.edit.setText("70")
    hint.edit.textEdited.emit("70")
    assert form.errors() == {"distiller.options.hint_layer": "70 is above the maximum 64"}
    assert hint.edit.property("invalid")  # marked at the option itself
    hint.edit.setText("-2")
    hint.edit.textEdited.emit("-2")
    assert form.is_valid() and form.config().distiller.options == {"hint_layer": -2, "kernel_size": None}
    # another baseline starts from its own options, and an unknown option is refused
    form.editor("distiller.name").set_value("at")
    assert form.config().distiller.options == {}
    form.set_options_schema("at", distiller_class("at").Options)
    form.set_field("distiller.options", {"p": 2.0, "foo": 1})
    assert "distiller.options.foo" in form.errors()


def test_a_plan_error_is_marked_at_its_field_with_run_off(qtbot, make_window):
    window = make_window(probe=True)
    window.form.set_field("distiller.name", "fitnet")
    window.form.set_field("distiller.options", {"hint_layer": 9})  # in range, but no map of resnet8 there
    qtbot.waitUntil(lambda: window.form.error_text("distiller.options") != "", timeout=60000)
    assert "hint_layer" in window.form.error_text("distiller.options")
    assert "spatial feature map" in window.form.errors()["distiller.options.hint_layer"]
    assert not window.actions_["run"].isEnabled()
    window.form.set_field("distiller.options", {"hint_layer": 2})
    qtbot.waitUntil(lambda: window.actions_["run"].isEnabled(), timeout=20000)


def test_editors_follow_the_field_types():
    @dataclass
    class Sample:
        flag: bool = setting(False, help="a flag")
        count: int = setting(1, help="a count", minimum=0)
        rate: float | None = setting(None, help="a rate")
        word: str = setting("a", help="a word")
        pick: str = setting("x", help="a pick", choices=("x", "y"))
        picks: list[str] = setting(help="picks", factory=list, choices=("x", "y"))
        numbers: list[int] = setting(help="numbers", factory=list)
        folder: str | None = setting(None, help="a folder", widget="dir")
        extra: dict = setting(help="extra", factory=dict)

    hints = {"flag": bool, "count": int, "rate": float | None, "word": str, "pick": str, "picks": list[str],
             "numbers": list[int], "folder": str | None, "extra": dict}
    expected = {"flag": BoolEditor, "count": NumberEditor, "rate": NumberEditor, "word": TextEditor,
                "pick": ChoiceEditor, "picks": MultiChoiceEditor, "numbers": ListEditor, "folder": PathEditor,
                "extra": MappingEditor}
    for f in dataclasses.fields(Sample):
        editor = make_editor(f.name, f, hints[f.name])
        assert type(editor) is expected[f.name], f.name
        assert editor.toolTip() == f.metadata["help"]
    assert TableEditor  # the list-of-dataclass editor is chosen by the form (see test above)


def test_tooltips_come_from_the_schema(window):
    label_tips = [w.toolTip() for w in window.form.findChildren(type(window.form.problems))
                  if w.buddy() is window.form.editor("data.batch_size")]
    assert label_tips == ["Training batch size of every stage."]
    assert window.form.editor("teacher.arch").combo.itemData(
        window.form.editor("teacher.arch").combo.findData("resnet8"), Qt.ItemDataRole.ToolTipRole).startswith("ResNet-8")
