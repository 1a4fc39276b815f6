"""The teacher and student pickers: the zoo plus torchvision and timm, searchable, with
parameter counts and a warning when training the model would not fit the device."""

from __future__ import annotations

import pytest

from mgd_gui.setup.model_picker import ModelPicker, memory_text

pytest.importorskip("timm")


def _catalog():
    from engine.models.sources import catalog

    return catalog()


def _listed(picker) -> list[str]:
    from mgd_gui.setup.model_picker import NAME_ROLE

    model = picker.completer.completionModel()
    return [model.index(i, 0).data(NAME_ROLE) for i in range(model.rowCount())]


def test_typing_in_the_search_lists_matching_models_and_picks_one(qtbot, window):
    form = window.form
    picker = form.editor("student.arch")
    assert isinstance(picker, ModelPicker) and isinstance(form.editor("teacher.arch"), ModelPicker)
    picker.set_catalog(_catalog())
    assert picker.combo.findData("torchvision:resnet50") >= 0 and picker.combo.findData("resnet8") >= 0
    qtbot.keyClicks(picker.search, "timm:mobilenet")
    listed = _listed(picker)
    assert "timm:mobilenetv3_small_100" in listed and len(listed) > 5
    assert all("timm:mobilenet" in name for name in listed)
    assert listed == picker.matches("timm:mobilenet")
    picker.completer.activated.emit("timm:mobilenetv3_small_100")
    assert form.config().student.arch == "timm:mobilenetv3_small_100"
    assert picker.combo.currentData() == "timm:mobilenetv3_small_100" and picker.search.text() == ""
    assert not form.errors()
    # a name typed in full and confirmed with Enter; an unknown one is marked with close matches
    qtbot.keyClicks(picker.search, "torchvision:resnet5")
    picker.search.returnPressed.emit()
    assert "torchvision:resnet50" in form.errors()["student.arch"]
    assert not window.actions_["run"].isEnabled()


def test_search_matches_get_parameter_counts_and_the_choice_a_memory_estimate(qtbot, make_window, monkeypatch):
    from mgd_gui import probes

    monkeypatch.setattr(probes, "device_memory", lambda device: ("cuda:0", 2**30))  # a 1 GiB GPU
    window = make_window(probe=True)
    picker = window.form.editor("teacher.arch")
    qtbot.waitUntil(lambda: picker.combo.findData("timm:resnet10t") >= 0, timeout=60000)  # the catalogue arrived
    qtbot.keyClicks(picker.search, "timm:resnet10")
    qtbot.waitUntil(lambda: picker.counts.get("timm:resnet10t") is not None, timeout=60000)
    from engine.models import parameter_count

    assert picker.counts["timm:resnet10t"] == parameter_count("timm:resnet10t", 10, 1)  # the demo: 10 classes, gray
    assert "M" in picker.model.item(list(picker._rows).index("timm:resnet10t")).text()
    picker.search.clear()
    window.form.set_field("data.batch_size", 65536)  # 8x8 demo images: a huge batch
    window.form.set_field("teacher.arch", "timm:resnet10t")
    qtbot.waitUntil(lambda: picker.too_large() is True, timeout=60000)
    assert "too large for cuda:0" in picker.info.text() and "parameters" in picker.info.text()
    window.form.set_field("data.batch_size", 8)
    qtbot.waitUntil(lambda: not picker.too_large() and "training needs" in picker.info.text(), timeout=60000)


def test_the_memory_rule():
    text, too_large = memory_text("m", estimate=int(0.95 * 2**30), capacity=2**30, device="cuda:0", image_size=224,
                                  batch_size=64)
    assert too_large and "973 MiB" in text and "224 px, batch 64" in text
    text, too_large = memory_text("m", estimate=int(0.85 * 2**30), capacity=2**30, device="cpu", image_size=32,
                                  batch_size=8)
    assert not too_large and "cpu: 1.0 GiB" in text
