"""Reading a contract-2 scene set and mapping labels to probe answers."""

import json

import pytest

from forge.images import draw
from forge.probes import DEFAULT_PROBES
from forge.scenes import SceneError, probe_answers, read_scenes


def write_set(d, n=3):
    (d / "images").mkdir()
    with open(d / "labels.jsonl", "w") as f:
        for i in range(n):
            img, lab = draw(i, 64)
            img.save(d / f"images/{i:06d}.png")
            lab = dict(lab, image=f"images/{i:06d}.png", seed=i, index=i, sunglasses=False, description="x")
            f.write(json.dumps(lab) + "\n")


def test_reads_scenes_and_maps_every_probe(tmp_path):
    write_set(tmp_path)
    scenes = read_scenes(tmp_path)
    assert len(scenes) == 3 and scenes[0].load().size == (64, 64)
    for s in scenes:
        answers = probe_answers(s.labels)
        assert set(answers) == {p.id for p in DEFAULT_PROBES}
        assert answers["hands"] == ("none", "one", "two")[s.labels["hands_on_wheel"]]
        assert answers["belt"] == ("yes" if s.labels["seat_belt"] else "no")


def test_missing_image_is_named(tmp_path):
    write_set(tmp_path, 1)
    (tmp_path / "images/000000.png").unlink()
    with pytest.raises(SceneError, match="000000.png does not exist"):
        read_scenes(tmp_path)


def test_unknown_label_value_is_rejected(tmp_path):
    write_set(tmp_path, 1)
    s = read_scenes(tmp_path)[0]
    with pytest.raises(SceneError, match="gaze"):
        probe_answers(dict(s.labels, gaze="sky"))
