"""engine.review: the test images behind a confusion cell, and an image file classified through
the run's own preprocessing, checked against the engine's own evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.errors import DataError, InputError
from engine.review import classify_image, confusion_cell, run_predictions, run_preprocessing, top_k
from engine.runs import read_metrics
from tests.inspect_runs import inspect_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return inspect_runs(tmp_path_factory)


def final_confusion(run_dir, model: str) -> np.ndarray:
    """The confusion matrix the engine's evaluation stage wrote for ``model`` (best weights)."""
    found = [e for e in read_metrics(run_dir) if e["event"] == "Evaluation" and e["stage"] == "evaluate"
             and e["model"] == model]
    return np.asarray(found[-1]["confusion"])


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_every_confusion_cell_holds_as_many_images_as_the_evaluation_counted(runs, model):
    expected = final_confusion(runs["mgd"], model)
    pred = run_predictions(runs["mgd"])
    chosen = pred.predicted(model)
    counted = np.zeros_like(expected)
    np.add.at(counted, (pred.labels, chosen), 1)
    assert np.array_equal(counted, expected)
    t, p = np.unravel_index(np.argmax(expected - np.diag(np.diag(expected))), expected.shape)  # largest error
    cell = confusion_cell(runs["mgd"], int(t), int(p), model=model, k=3)
    assert cell["count"] == expected[t, p] > 0 and len(cell["items"]) == cell["count"]
    for item in cell["items"]:
        assert pred.labels[item["index"]] == t
        own = item[model]
        assert own[0][0] == pred.classes[p] and len(own) == 3  # the model's top class is the cell's column
        assert own[0][1] >= own[1][1] >= own[2][1]
        assert item["image"].shape == (8, 8, 1) and item["image"].dtype == np.uint8
        assert item["teacher"] is not None and item["student"] is not None


def test_a_run_without_a_teacher_of_its_own_reviews_with_the_loaded_teacher(runs):
    cell = confusion_cell(runs["kd"], 0, 0, model="teacher", limit=2)
    assert cell["items"] and cell["items"][0]["teacher"] is not None
    with pytest.raises(InputError, match="not a class"):
        confusion_cell(runs["kd"], 0, 10)


def test_an_image_file_gets_the_same_probabilities_as_the_same_test_image(runs, tmp_path):
    pred = run_predictions(runs["mgd"])
    index = 17
    pixels = pred.images[index].numpy()[0]  # 8 x 8 gray
    path = tmp_path / "digit.png"
    Image.fromarray(pixels, mode="L").save(path)
    result = classify_image(runs["mgd"], path, k=5)
    assert result["size"] == (8, 8) and result["channels"] == 1
    assert np.array_equal(result["image"][:, :, 0], pixels)
    for model, probs in (("student", pred.student), ("teacher", pred.teacher)):
        expected = top_k(probs[index], pred.classes, 5)  # the same image through the test loader
        assert [c for c, _ in result[model]] == [c for c, _ in expected]
        assert np.allclose([v for _, v in result[model]], [v for _, v in expected], atol=1e-3)
    assert abs(sum(v for _, v in top_k(pred.student[index], pred.classes, 10)) - 100.0) < 1e-3


def test_any_image_is_converted_to_the_runs_channels_and_size(runs, tmp_path):
    rgb = np.zeros((40, 30, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255  # pure red: gray 76 after ITU-R 601 conversion
    path = tmp_path / "red.jpg"
    Image.fromarray(rgb).save(path, quality=100)
    result = classify_image(runs["mgd"], path)
    assert result["image"].shape == (8, 8, 1) and abs(int(result["image"].mean()) - 76) <= 2
    assert len(result["student"]) == 5
    prep = run_preprocessing(runs["mgd"])
    assert prep.classes == [str(i) for i in range(10)] and len(prep.mean) == 1
    bogus = tmp_path / "not-an-image.png"
    bogus.write_text("hello")
    with pytest.raises(DataError, match="not-an-image.png: not an image in an allowed format"):
        classify_image(runs["mgd"], bogus)
    with pytest.raises(InputError, match="no such image"):
        classify_image(runs["mgd"], tmp_path / "missing.png")
