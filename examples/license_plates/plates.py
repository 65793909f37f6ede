"""Synthetic US-style licence plates, rendered with Pillow, and a video of them (OpenCV).

``random_plate`` draws "7ABC123" (California-style) or "ABC1234" texts; ``render`` draws one on
a plate with a varied font and size, a frame, noise, blur and a small rotation, placed on a
grey "road" frame of 640x360; ``make_video`` writes such frames to an mp4 (the client reads it
back as a camera would be read). ``make_stolen_db`` writes the stolen-vehicle table (SQLite).
Seeded: the same seed gives the same plates, frames and table.

    python examples/license_plates/plates.py [--plates 20] [--video camera.mp4]
"""

from __future__ import annotations

import glob
import sqlite3
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = sorted(
    f
    for f in glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf")
    if "Oblique" not in f and "ExtraLight" not in f
)
LETTERS = string.ascii_uppercase.replace("I", "").replace("O", "").replace("Q", "")


def random_plate(rng: np.random.Generator) -> str:
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, 4))
    letters = "".join(LETTERS[int(i)] for i in rng.integers(0, len(LETTERS), 3))
    if rng.random() < 0.5:
        return f"{digits[0]}{letters}{digits[1:]}"  # 7ABC123
    return f"{letters}{digits}"  # ABC1234


def _font(rng: np.random.Generator, size: int) -> ImageFont.ImageFont:
    if FONTS:
        return ImageFont.truetype(FONTS[int(rng.integers(len(FONTS)))], size)
    return ImageFont.load_default(size=size)


def render(text: str, rng: np.random.Generator) -> Image.Image:
    """A 640x360 frame with the plate ``text`` somewhere on it."""
    size = int(rng.integers(44, 64))
    font = _font(rng, size)
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 40, bottom - top + 36
    plate = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(215, 250, 3)))
    draw = ImageDraw.Draw(plate)
    draw.rectangle([3, 3, w - 4, h - 4], outline=(30, 30, 40), width=3)
    ink = tuple(int(v) for v in rng.integers(10, 60, 3))
    draw.text((20 - left, 18 - top), text, fill=ink, font=font)
    plate = plate.rotate(float(rng.uniform(-4, 4)), expand=True, fillcolor=(90, 90, 90))
    frame = Image.new("RGB", (640, 360), (90, 90, 95))
    x = int(rng.integers(10, max(11, 640 - plate.width - 10)))
    y = int(rng.integers(10, max(11, 360 - plate.height - 10)))
    frame.paste(plate, (x, y))
    pixels = np.asarray(frame, dtype=np.float32) + rng.normal(0, 8, (360, 640, 3))
    frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return frame.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))


def make_video(path: Path, texts: list[str], seed: int = 0, fps: int = 5) -> Path:
    """One frame per plate, as an mp4 (mp4v)."""
    import cv2  # opencv-python-headless

    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 360))
    for text in texts:
        writer.write(np.asarray(render(text, rng))[:, :, ::-1])  # RGB -> BGR
    writer.release()
    return path


def make_stolen_db(path: Path, texts: list[str]) -> Path:
    """The stolen-vehicle table: plate, make, model, colour, reported."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "create table stolen (plate text primary key, make text, model text,"
            " colour text, reported text)"
        )
        cars = [("Toyota", "Camry", "silver"), ("Ford", "F-150", "blue"), ("Honda", "Civic", "red")]
        db.executemany(
            "insert into stolen values (?, ?, ?, ?, ?)",
            [(t, *cars[i % 3], f"2026-11-{10 + i % 18:02d}") for i, t in enumerate(texts)],
        )
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A camera video of synthetic plates, and a table.")
    parser.add_argument("--plates", type=int, default=20, help="how many (one frame each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--video", type=Path, default=Path("camera.mp4"))
    parser.add_argument("--stolen-db", type=Path, default=Path(__file__).with_name("stolen.db"))
    parser.add_argument("--stolen-every", type=int, default=7, help="every Nth plate is stolen")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    texts = [random_plate(rng) for _ in range(args.plates)]
    make_video(args.video, texts, seed=args.seed)
    make_stolen_db(args.stolen_db, texts[:: args.stolen_every])
    print(f"{args.video}: {', '.join(texts)}")
    print(f"{args.stolen_db}: stolen {', '.join(texts[:: args.stolen_every])}")
