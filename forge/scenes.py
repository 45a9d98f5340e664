"""Rendered scene sets (ARCHITECTURE.md contract 2: DIR/images/*.png + DIR/labels.jsonl) and the
mapping from labels to the default probes' answers — for calibration on real renders and for the
cabin model's training data (issue 4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .probes import DEFAULT_PROBES, Probe


class SceneError(Exception):
    pass


@dataclass(frozen=True)
class Scene:
    image: Path
    labels: dict

    def load(self) -> Image.Image:
        return Image.open(self.image).convert("RGB")


def read_scenes(directory: str | Path) -> list[Scene]:
    """Every labelled image of a rendered set, in labels.jsonl order."""
    directory = Path(directory)
    out = []
    try:
        lines = (directory / "labels.jsonl").read_text().splitlines()
    except OSError as e:
        raise SceneError(f"{directory}/labels.jsonl: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            labels = json.loads(line)
            image = directory / labels["image"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SceneError(f"{directory}/labels.jsonl line {n}: {e}") from e
        if not image.is_file():
            raise SceneError(f"{directory}/labels.jsonl line {n}: {image} does not exist")
        out.append(Scene(image, labels))
    return out


_FIELDS = {"eyes": "eyes", "gaze": "gaze", "phone": "phone", "yawn": "yawning", "hands": "hands_on_wheel",
           "belt": "seat_belt", "face": "face", "passenger": "passenger"}


def probe_answer(probe: Probe, labels: dict) -> str:
    """The answer a probe should give for a scene (contract 2: hands 0/1/2 -> none/one/two,
    booleans -> yes/no, other labels are the answers themselves)."""
    value = labels[_FIELDS[probe.id]]
    if probe.id == "hands":
        answer = ("none", "one", "two")[int(value)]
    elif isinstance(value, bool):
        answer = "yes" if value else "no"
    else:
        answer = str(value)
    if answer not in probe.answers:
        raise SceneError(f"label {value!r} is not an answer of probe {probe.id}")
    return answer


def probe_answers(labels: dict, probes: tuple[Probe, ...] = DEFAULT_PROBES) -> dict[str, str]:
    return {p.id: probe_answer(p, labels) for p in probes}
