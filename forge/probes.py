"""The default probe set (ARCHITECTURE.md, probes.toml): closed questions with fixed answers. The
cabin model (issue 4) is trained on exactly these; ids and answers are stable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    id: str
    question: str
    answers: tuple[str, ...]
    field: str
    positive: tuple[str, ...]


DEFAULT_PROBES: tuple[Probe, ...] = (
    Probe("eyes", "Are the driver's eyes open or closed?", ("open", "closed"), "eyes_closed", ("closed",)),
    Probe(
        "gaze",
        "Where is the driver looking?",
        ("road", "left mirror", "right mirror", "down", "console"),
        "eyes_on_road",
        ("road",),
    ),
    Probe("phone", "Is the driver using a phone?", ("none", "in hand", "at ear"), "phone_in_use", ("in hand", "at ear")),
    Probe("yawn", "Is the driver yawning?", ("no", "yes"), "yawning", ("yes",)),
    Probe("hands", "How many hands are on the wheel?", ("none", "one", "two"), "hands_on_wheel", ("one", "two")),
    Probe("belt", "Is the driver wearing the seat belt?", ("yes", "no"), "seat_belt", ("yes",)),
    Probe("face", "Is the driver's face visible?", ("visible", "occluded", "absent"), "face_visible", ("visible",)),
    Probe("passenger", "Is there a passenger?", ("yes", "no"), "passenger_present", ("yes",)),
)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def probes_toml(probes: tuple[Probe, ...] = DEFAULT_PROBES) -> str:
    lines = ["# Closed questions the model answers by scoring each answer (see forge/README.md).", ""]
    for p in probes:
        lines += [
            "[[probe]]",
            f"id = {_toml_str(p.id)}",
            f"question = {_toml_str(p.question)}",
            "answers = [" + ", ".join(_toml_str(a) for a in p.answers) + "]",
            f"field = {_toml_str(p.field)}",
            "positive = [" + ", ".join(_toml_str(a) for a in p.positive) + "]",
            "",
        ]
    return "\n".join(lines)


def read_probes(path) -> tuple[Probe, ...]:
    """A probes.toml file (a bundle's own probe set), in file order."""
    import tomllib
    from pathlib import Path

    return tuple(
        Probe(p["id"], p["question"], tuple(p["answers"]), p["field"], tuple(p["positive"]))
        for p in tomllib.loads(Path(path).read_text())["probe"]
    )
