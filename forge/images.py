"""Procedurally drawn cabin-like images for calibration and golden fixtures, until the scene renderer
(scenes/ crate, ARCHITECTURE.md contract 2) provides real renders. Deterministic per seed: the same
seed gives the same pixels with the pinned Pillow and numpy.

Each image comes with labels in contract 2's vocabulary and a description sentence, so the tokenizer
corpus and calibration prompts look like the real task's."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

GAZE = ("road", "left mirror", "right mirror", "down", "console")
PHONE = ("none", "in hand", "at ear")
FACE = ("visible", "occluded", "absent")


def labels_for(seed: int) -> dict:
    r = np.random.default_rng(seed)
    return {
        "eyes": str(r.choice(["open", "closed"], p=[0.8, 0.2])),
        "gaze": str(r.choice(GAZE)),
        "yawning": bool(r.random() < 0.15),
        "phone": str(r.choice(PHONE, p=[0.6, 0.2, 0.2])),
        "hands_on_wheel": int(r.choice([0, 1, 2], p=[0.1, 0.3, 0.6])),
        "seat_belt": bool(r.random() < 0.8),
        "face": str(r.choice(FACE, p=[0.8, 0.1, 0.1])),
        "passenger": bool(r.random() < 0.3),
        "lighting": str(r.choice(["day", "night"])),
    }


def describe(lab: dict) -> str:
    if lab["face"] == "absent":
        return "The driver seat is empty."
    parts = [f"The driver looks at the {lab['gaze']}" if lab["gaze"] != "down" else "The driver looks down"]
    parts.append("with eyes closed" if lab["eyes"] == "closed" else "with eyes open")
    s = " ".join(parts) + ", " + {0: "no hands", 1: "one hand", 2: "both hands"}[lab["hands_on_wheel"]] + " on the wheel."
    if lab["phone"] != "none":
        s += f" A phone is {lab['phone']}."
    if lab["yawning"]:
        s += " The driver is yawning."
    s += " The seat belt is fastened." if lab["seat_belt"] else " The seat belt is not fastened."
    if lab["passenger"]:
        s += " A passenger sits next to the driver."
    return s


def draw(seed: int, size: int) -> tuple[Image.Image, dict]:
    """A cabin-like scene (seat, head, eyes, wheel, hands, phone, belt) drawn from the labels."""
    lab = labels_for(seed)
    r = np.random.default_rng(seed + 10_000)
    night = lab["lighting"] == "night"
    base = 40 if night else 150
    bg = tuple(int(v) for v in np.clip(base + r.normal(0, 20, 3), 0, 255))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = size / 128.0

    def box(x0, y0, x1, y1):
        return [x0 * s, y0 * s, x1 * s, y1 * s]

    dx, dy = r.normal(0, 4, 2)
    d.rectangle(box(20 + dx, 40, 90 + dx, 128), fill=(60, 60, 70) if not night else (25, 25, 30))  # seat
    if lab["face"] != "absent":
        skin = (200, 160, 130) if not night else (90, 80, 70)
        hx, hy = 55 + dx, 45 + dy
        d.ellipse(box(hx - 16, hy - 20, hx + 16, hy + 20), fill=skin)
        d.rectangle(box(hx - 25, hy + 20, hx + 25, 128), fill=(40, 70, 140) if not night else (20, 30, 60))  # torso
        off = {"road": 0, "left mirror": -5, "right mirror": 5, "down": 0, "console": 3}[lab["gaze"]]
        ey = hy - 5 + (4 if lab["gaze"] == "down" else 0)
        for ex in (hx - 7 + off, hx + 7 + off):
            if lab["eyes"] == "open":
                d.ellipse(box(ex - 3, ey - 2, ex + 3, ey + 2), fill=(255, 255, 255))
                d.ellipse(box(ex - 1, ey - 1, ex + 1, ey + 1), fill=(20, 20, 20))
            else:
                d.line(box(ex - 3, ey, ex + 3, ey), fill=(30, 30, 30), width=max(1, int(s)))
        mouth_h = 6 if lab["yawning"] else 1
        d.ellipse(box(hx - 4, hy + 9, hx + 4, hy + 9 + mouth_h), fill=(90, 30, 30))
        if lab["face"] == "occluded":
            d.rectangle(box(hx - 18, hy - 12, hx + 18, hy + 4), fill=(30, 30, 30))
        if lab["seat_belt"]:
            d.line(box(hx + 22, hy + 20, hx - 20, 128), fill=(15, 15, 15), width=max(2, int(3 * s)))
        if lab["phone"] == "at ear":
            d.rectangle(box(hx + 14, hy - 8, hx + 20, hy + 6), fill=(10, 10, 10))
        elif lab["phone"] == "in hand":
            d.rectangle(box(hx + 5, hy + 35, hx + 13, hy + 48), fill=(10, 10, 10))
    d.ellipse(box(25, 80, 85, 128), outline=(20, 20, 20), width=max(2, int(4 * s)))  # wheel
    for i in range(lab["hands_on_wheel"] if lab["face"] != "absent" else 0):
        hx = 30 if i == 0 else 78
        d.ellipse(box(hx - 5, 95, hx + 5, 105), fill=(200, 160, 130) if not night else (90, 80, 70))
    if lab["passenger"]:
        d.ellipse(box(100, 35, 124, 65), fill=(180, 140, 120) if not night else (80, 70, 60))
    arr = np.asarray(img).astype(np.int16) + r.integers(-6, 7, (size, size, 3))  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), lab


def pixel_values(img: Image.Image, size: int, mean, std) -> np.ndarray:
    """RGB image -> float32 [1,3,S,S] with the bundle's normalisation (resized if needed, bilinear)."""
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)[None].copy()


QUESTIONS = (
    "Describe the driver.",
    "What is the driver doing?",
    "Is the driver paying attention to the road?",
    "Describe the cabin.",
)
