"""Train the geo-photos example: a landscape classifier that uses where a photo was taken.

Everything is SYNTHETIC and seeded (no download). A 1-degree grid of 60 cells over southern
Norway and Sweden (58-63 N, 5-16 E) has a region each (``regions()``: "coast", "forest",
"mountain" or "farmland"), with rainfall (mm/year) and elevation (m) drawn around that region's
typical values. A photo's landscape (``LABELS``) depends on its region, and its colours on the
landscape, with noise, so neither the pixels alone nor the place alone give the answer: the
model (a scikit-learn logistic regression on [mean R, G, B, std of grey, rainfall / 1000,
elevation / 1000]) does better with both, which is why the handler looks the region up.

``photo(lat, lon, label)`` renders a 96x64 JPEG of that landscape with the EXIF GPS tags a
phone writes (Pillow), the input the handler reads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

NAME = "geo-photos"
DESCRIPTION = (
    "Lambda-style bundle: a photo's EXIF GPS gives a grid cell, the cell's region is looked "
    "up in SQL (Redis cache in front), and a classifier names the landscape"
)
LABELS = ("sea", "woods", "snow", "fields")
REGIONS = {  # region: (rainfall, elevation, probabilities of each label)
    "coast": (2000.0, 50.0, (0.6, 0.2, 0.05, 0.15)),
    "forest": (900.0, 300.0, (0.05, 0.75, 0.1, 0.1)),
    "mountain": (1500.0, 1200.0, (0.05, 0.15, 0.7, 0.1)),
    "farmland": (700.0, 100.0, (0.1, 0.15, 0.05, 0.7)),
}
COLOURS = {
    "sea": (40, 90, 170),
    "woods": (40, 110, 50),
    "snow": (225, 230, 235),
    "fields": (190, 170, 70),
}
SEED = 3


def cell(lat: float, lon: float) -> str:
    """The 1-degree grid cell of a point: ``N59E010`` (floor of each coordinate)."""
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"{ns}{abs(int(np.floor(lat))):02d}{ew}{abs(int(np.floor(lon))):03d}"


def regions() -> list[tuple[str, str, float, float]]:
    """``(cell, region, rainfall, elevation)`` for the 60 cells, as the SQL table holds them."""
    rng = np.random.default_rng(SEED)
    names = list(REGIONS)
    out = []
    for lat in range(58, 63):
        for lon in range(5, 17):
            region = names[int(rng.integers(len(names)))] if lon > 6 else "coast"
            rain, elev, _ = REGIONS[region]
            out.append(
                (
                    cell(lat + 0.5, lon + 0.5),
                    region,
                    round(rain * rng.uniform(0.8, 1.2)),
                    round(elev * rng.uniform(0.7, 1.3)),
                )
            )
    return out


def pixels_features(image: Image.Image) -> list[float]:
    """What the handler computes from a photo's pixels."""
    rgb = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255
    grey = rgb.mean(axis=2)
    return [*rgb.reshape(-1, 3).mean(axis=0).tolist(), float(grey.std())]


def photo(lat: float, lon: float, label: str, rng: np.random.Generator) -> bytes:
    """A JPEG of ``label``'s landscape with EXIF GPS for (lat, lon), as a phone writes it."""
    base = np.array(COLOURS[label], dtype=np.float32)
    base = base + rng.normal(0, 45, 3)  # light, season, white balance: colours overlap
    noise = rng.normal(0, 25, (64, 96, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)  # GPSInfo

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        d, m = int(value), int(value * 60) % 60
        return (float(d), float(m), round((value * 3600) % 60, 2))

    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, exif=exif)
    return buffer.getvalue()


def sample(n: int, seed: int) -> list[tuple[float, float, str, str]]:
    """``n`` photos' ``(lat, lon, cell, label)``, a label drawn from its cell's region."""
    rng = np.random.default_rng(seed)
    table = {c: r for c, r, _, _ in regions()}
    out = []
    for _ in range(n):
        lat, lon = rng.uniform(58, 63), rng.uniform(5, 17)
        c = cell(lat, lon)
        label = LABELS[int(rng.choice(4, p=REGIONS[table[c]][2]))]
        out.append((lat, lon, c, label))
    return out


def build(out_dir: Path) -> Path:
    rng = np.random.default_rng(SEED + 1)
    rows = {c: (rain, elev) for c, _, rain, elev in regions()}
    x, y = [], []
    for lat, lon, c, label in sample(3000, SEED + 2):
        image = Image.open(io.BytesIO(photo(lat, lon, label, rng)))
        rain, elev = rows[c]
        x.append([*pixels_features(image), rain / 1000, elev / 1000])
        y.append(label)
    model = LogisticRegression(max_iter=2000, C=10.0).fit(np.array(x), np.array(y))
    path = Path(out_dir) / "model.joblib"
    joblib.dump(model, path)
    return path


def sample_event() -> dict[str, Any]:
    import base64

    lat, lon, _, label = sample(1, 99)[0]
    data = photo(lat, lon, label, np.random.default_rng(0))
    return {"image": base64.b64encode(data).decode()}


if __name__ == "__main__":
    print(build(Path(__file__).resolve().parent))
