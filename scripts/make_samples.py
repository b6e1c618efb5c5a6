"""Render the synthetic infrared / visible sample pair in ``samples/``.

One made-up street scene (sky, brick building, grass, road, bushes; two people and a car standing
in a dark shadow on the right) is drawn twice from the same geometry, so the pair is aligned:

* ``ir16.png``      16-bit PNG, 14-bit raw counts (0..16383) like a radiometric thermal camera:
                    cool low-texture background, warm targets with smooth falloff, column
                    fixed-pattern noise and temporal noise.
* ``ir.png``        8-bit gray: ``round((ir16 - 1024) * 255 / 14336)`` clipped to 0..255.
* ``vis_color.png`` 8-bit colour (written BGR by cv2): rich texture, the right part in deep shadow
                    where the targets are barely visible.
* ``vis.png``       8-bit gray: BT.601 luma ``round(0.299 R + 0.587 G + 0.114 B)`` of vis_color.

Deterministic (fixed seed, no input files, no network): running it twice gives byte-identical
files. Usage: ``python scripts/make_samples.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

W, H = 320, 240
SEED = 20240611
RAW_LO, RAW_SPAN = 1024, 14336  # ir16 = RAW_LO + t * RAW_SPAN for a normalised temperature t in [0, 1]

SKY_Y = 62  # horizon of the sky / top of the ground
BUILDING = (18, 30, 150, 176)  # x0, y0, x1, y1
GRASS_Y = 112
ROAD_Y = 176
SHADOW_X = 178  # the dark region: x > SHADOW_X, below the sky
PEOPLE = [(224, 170, 62), (262, 174, 66)]  # centre x, foot y, height
CAR = (196, 190, 300, 228)  # x0, y0, x1, y1


# ------------------------------------------------------------------ geometry (shared by both bands)


def _mask(draw) -> np.ndarray:
    """Anti-aliased float mask in [0, 1] drawn by ``draw(img_u8)``."""
    m = np.zeros((H, W), np.uint8)
    draw(m)
    return m.astype(np.float64) / 255.0


def person_masks(cx: int, foot: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(body, head) masks of a standing human silhouette."""
    head_r = max(2, round(h * 0.075))
    head_c = (cx, foot - h + head_r)
    neck = foot - h + 2 * head_r
    hip = foot - round(h * 0.45)
    sw = round(h * 0.13)  # half shoulder width

    def body(m):
        pts = np.array([[cx - sw, neck + 2], [cx + sw, neck + 2], [cx + sw - 2, hip], [cx - sw + 2, hip]])
        cv2.fillConvexPoly(m, pts.astype(np.int32), 255, cv2.LINE_AA)
        t = max(2, round(h * 0.07))
        cv2.line(m, (cx - sw, neck + 3), (cx - sw - 3, hip - 2), 255, t, cv2.LINE_AA)  # arms
        cv2.line(m, (cx + sw, neck + 3), (cx + sw + 4, hip - 4), 255, t, cv2.LINE_AA)
        cv2.line(m, (cx - 3, hip), (cx - 5, foot), 255, t + 1, cv2.LINE_AA)  # legs
        cv2.line(m, (cx + 3, hip), (cx + 6, foot), 255, t + 1, cv2.LINE_AA)
        cv2.line(m, (cx, neck - 1), (cx, neck + 3), 255, 3, cv2.LINE_AA)  # neck

    def head(m):
        cv2.circle(m, head_c, head_r, 255, -1, cv2.LINE_AA)

    return _mask(body), _mask(head)


def car_masks() -> dict[str, np.ndarray]:
    x0, y0, x1, y1 = CAR
    wheel_r = 9
    base = y1 - wheel_r

    def body(m):
        cv2.rectangle(m, (x0, y0 + 12), (x1, base), 255, -1, cv2.LINE_AA)
        cabin = np.array([[x0 + 24, y0 + 13], [x0 + 36, y0], [x1 - 30, y0], [x1 - 16, y0 + 13]])
        cv2.fillConvexPoly(m, cabin.astype(np.int32), 255, cv2.LINE_AA)

    def windows(m):
        rear = [[x0 + 29, y0 + 12], [x0 + 38, y0 + 3], [x0 + 58, y0 + 3], [x0 + 58, y0 + 12]]
        front = [[x0 + 62, y0 + 12], [x0 + 62, y0 + 3], [x1 - 32, y0 + 3], [x1 - 21, y0 + 12]]
        for pts in (rear, front):
            cv2.fillConvexPoly(m, np.array(pts, np.int32), 255, cv2.LINE_AA)

    def wheels(m):
        for wx in (x0 + 20, x1 - 20):
            cv2.circle(m, (wx, base), wheel_r, 255, -1, cv2.LINE_AA)

    def engine(m):  # the car faces right: engine under the front hood
        cv2.rectangle(m, (x1 - 24, y0 + 14), (x1 - 2, base - 2), 255, -1, cv2.LINE_AA)

    def exhaust(m):
        cv2.ellipse(m, (x0 - 6, base + 2), (10, 4), 0, 0, 360, 255, -1, cv2.LINE_AA)

    parts = dict(body=body, windows=windows, wheels=wheels, engine=engine, exhaust=exhaust)
    return {k: _mask(f) for k, f in parts.items()}


def region_masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]
    sky = (yy < SKY_Y).astype(np.float64)
    x0, y0, x1, y1 = BUILDING
    building = ((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float64)
    road = (yy >= ROAD_Y).astype(np.float64)
    grass = ((yy >= GRASS_Y) & (yy < ROAD_Y)).astype(np.float64) * (1 - building)
    # bushes / tree line behind the people
    def bushes(m):
        for cx, cy, r in [(190, 80, 22), (222, 70, 28), (260, 76, 26), (298, 68, 30), (320, 86, 22), (168, 96, 16)]:
            cv2.circle(m, (cx, cy), r, 255, -1, cv2.LINE_AA)
        cv2.rectangle(m, (160, 80), (319, GRASS_Y + 4), 255, -1)
    bush = _mask(bushes) * (1 - building) * (yy < GRASS_Y + 6)
    grass = grass * (1 - bush)
    ground = (1 - sky) * (1 - building) * (1 - road) * (1 - grass) * (1 - bush)  # paved yard
    sky = sky * (1 - building) * (1 - bush)
    windows = np.zeros((H, W))
    for wy in range(y0 + 14, y1 - 40, 36):
        for wx in range(x0 + 12, x1 - 20, 32):
            windows[wy:wy + 22, wx:wx + 16] = 1
    door = np.zeros((H, W))
    door[y1 - 38:y1, x0 + 54:x0 + 76] = 1
    # shadow / night region, soft-edged
    shadow = ((xx > SHADOW_X) & (yy > SKY_Y - 18)).astype(np.float32)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 6).astype(np.float64) * (1 - sky)  # the sky stays lit
    return dict(sky=sky, building=building, road=road, grass=grass, bush=bush, ground=ground,
                windows=windows * building, door=door * building, shadow=shadow)


# ------------------------------------------------------------------ visible band


def brick_texture(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(colour tint per pixel (H, W, 3), mortar mask)."""
    tint = np.zeros((H, W, 3))
    mortar = np.zeros((H, W))
    bh, bw = 7, 15
    for r, y in enumerate(range(0, H, bh)):
        off = (bw // 2) * (r % 2)
        for x in range(-off, W, bw):
            c = np.array([150, 70, 50]) * rng.uniform(0.75, 1.15) + rng.normal(0, 8, 3)
            tint[y:y + bh, max(x, 0):max(x + bw, 0)] = c
            mortar[y:y + bh, max(x, 0):max(x + 1, 0)] = 1
        mortar[y, :] = 1
    return tint, mortar


def grass_texture(rng: np.random.Generator) -> np.ndarray:
    g = np.zeros((H, W, 3), np.uint8)
    g[:] = (58, 96, 40)
    for _ in range(5200):
        x, y = int(rng.integers(0, W)), int(rng.integers(GRASS_Y - 6, ROAD_Y + 2))
        L = int(rng.integers(3, 8))
        dx = int(rng.integers(-2, 3))
        shade = rng.uniform(0.6, 1.5)
        col = tuple(int(min(255, v * shade)) for v in (70, 120, 45))
        cv2.line(g, (x, y), (x + dx, y - L), col, 1, cv2.LINE_AA)
    return g.astype(np.float64)


def render_visible(rng: np.random.Generator, reg: dict, people: list, car: dict) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W, 3))
    # sky: gradient + soft clouds
    sky = np.stack([110 + 60 * yy / SKY_Y, 150 + 50 * yy / SKY_Y, 210 + 25 * yy / SKY_Y], -1)
    clouds = np.zeros((H, W), np.float32)
    for _ in range(7):
        cv2.ellipse(clouds, (int(rng.integers(0, W)), int(rng.integers(5, 45))),
                    (int(rng.integers(15, 40)), int(rng.integers(4, 9))), 0, 0, 360, 1.0, -1)
    clouds = cv2.GaussianBlur(clouds, (0, 0), 5).astype(np.float64)[..., None]
    sky = sky * (1 - 0.6 * clouds) + 245 * 0.6 * clouds
    img += reg["sky"][..., None] * sky
    # building: bricks, mortar, windows with frames, door
    tint, mortar = brick_texture(rng)
    wall = tint * (1 - mortar[..., None]) + np.array([185, 180, 170]) * mortar[..., None]
    wall = wall * (1 - reg["windows"][..., None]) + reg["windows"][..., None] * np.stack(
        [60 + 0.4 * (yy % 22) * 4, 80 + 0.4 * (yy % 22) * 4, 110 + 0.4 * (yy % 22) * 3], -1)
    frames = cv2.dilate(reg["windows"].astype(np.uint8), np.ones((5, 5), np.uint8)) - reg["windows"]
    wall = wall * (1 - frames[..., None]) + frames[..., None] * 225
    wall = wall * (1 - reg["door"][..., None]) + reg["door"][..., None] * np.array([90, 60, 35])
    img += reg["building"][..., None] * wall
    # grass, yard, bushes
    img += reg["grass"][..., None] * grass_texture(rng)
    paving = np.array([150, 145, 135]) * (1 - 0.25 * (((xx // 12) + (yy // 12)) % 2))[..., None]
    paving += rng.normal(0, 6, (H, W))[..., None]
    img += reg["ground"][..., None] * paving
    leaves = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.2).astype(np.float64)
    img += reg["bush"][..., None] * (np.array([45, 85, 40]) * (1 + 0.9 * leaves)[..., None])
    # road: asphalt grain, lane marks, curb
    asphalt = 95 + cv2.GaussianBlur(rng.normal(0, 14, (H, W)).astype(np.float32), (0, 0), 0.7)
    road = np.repeat(asphalt[..., None].astype(np.float64), 3, -1)
    for x in range(0, W, 44):
        cv2.rectangle(road, (x, 207), (x + 22, 210), (235, 235, 230), -1, cv2.LINE_AA)
    road[ROAD_Y:ROAD_Y + 4] = (200, 198, 192)
    img += reg["road"][..., None] * road
    # targets: dark clothes, skin, a dark red car (hard to see once in shadow)
    for k, (body, head) in enumerate(people):
        cloth = np.array([(55, 50, 60), (70, 62, 50)][k])
        img = img * (1 - body[..., None]) + body[..., None] * cloth
        img = img * (1 - head[..., None]) + head[..., None] * np.array([150, 112, 92])
    c = car
    img = img * (1 - c["body"][..., None]) + c["body"][..., None] * np.array([110, 28, 30])
    img = img * (1 - c["windows"][..., None]) + c["windows"][..., None] * np.array([70, 85, 100])
    img = img * (1 - c["wheels"][..., None]) + c["wheels"][..., None] * np.array([25, 25, 25])
    # shadow / night region: keep ~18 % of the light, with a slight blue cast
    s = reg["shadow"][..., None]
    img = img * (1 - s) + s * img * np.array([0.16, 0.17, 0.22])
    # camera noise (mostly luminance) and quantisation
    img += rng.normal(0, 2.0, (H, W))[..., None] + rng.normal(0, 0.7, (H, W, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ infrared band


def render_ir16(rng: np.random.Generator, reg: dict, people: list, car: dict) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    smooth = lambda a, s: cv2.GaussianBlur(a.astype(np.float32), (0, 0), s).astype(np.float64)  # noqa: E731
    lowfreq = smooth(rng.normal(0, 1, (H, W)), 12) * 6  # slow temperature variation, ~unit std
    t = np.zeros((H, W))
    t += reg["sky"] * (0.04 + 0.07 * yy / SKY_Y)  # cold sky, warmer to the horizon
    wall = 0.34 + 0.006 * ((yy % 7) < 1) + 0.05 * (yy > BUILDING[3] - 60) * (yy - (BUILDING[3] - 60)) / 60
    wall = wall * (1 - reg["windows"]) + reg["windows"] * 0.27  # glass reflects the cold sky
    wall = wall * (1 - reg["door"]) + reg["door"] * 0.40
    leak = smooth(cv2.dilate(reg["windows"].astype(np.uint8), np.ones((9, 9), np.uint8)) * (yy > 120), 3)
    t += reg["building"] * (wall + 0.06 * leak * (1 - reg["windows"]))  # heat leaking around ground-floor windows
    t += reg["grass"] * (0.24 + 0.015 * lowfreq)
    t += reg["ground"] * (0.31 + 0.01 * lowfreq)
    t += reg["bush"] * (0.20 + 0.02 * lowfreq)
    t += reg["road"] * (0.40 + 0.01 * lowfreq - 0.02 * ((yy >= 207) & (yy <= 210) & (xx % 44 <= 22)))
    t -= 0.03 * reg["shadow"] * (1 - reg["sky"])  # shade is a bit cooler
    t = smooth(t, 0.8)
    # warm targets with smooth thermal falloff (the blur of each mask makes a halo)
    for body, head in people:
        hot = np.maximum(0.80 * smooth(body, 0.9), 0.92 * smooth(head, 0.9))
        hot = np.maximum(hot, 0.5 * smooth(body + head, 4))
        t = t * (1 - np.clip(smooth(body + head, 1.5), 0, 1)) + hot
    c = car
    car_t = 0.50 * c["body"] + 0.35 * c["engine"] * c["body"] - 0.22 * c["windows"] + 0.45 * c["wheels"] * (1 - c["body"]) + 0.10 * c["wheels"] * c["body"]
    car_t = smooth(car_t, 1.8) + 0.18 * smooth(c["exhaust"], 3.5)
    a = np.clip(smooth(c["body"] + c["wheels"], 1.2), 0, 1)
    t = t * (1 - a) + car_t + 0.25 * smooth(c["engine"], 8) * (1 - a)
    t = t * (1 - 0.12 * ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2))  # vignetting
    # sensor noise: column fixed pattern + temporal
    t += rng.normal(0, 0.004, (1, W)) + rng.normal(0, 0.005, (H, W))
    raw = RAW_LO + t * RAW_SPAN
    return np.clip(np.round(raw), 0, 16383).astype(np.uint16)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    out: Path = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    reg = region_masks()
    people = [person_masks(*p) for p in PEOPLE]
    car = car_masks()

    rgb = render_visible(rng, reg, people, car)
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    vis = np.clip(np.round(0.299 * r + 0.587 * g + 0.114 * b), 0, 255).astype(np.uint8)
    ir16 = render_ir16(rng, reg, people, car)
    ir = np.clip(np.round((ir16.astype(np.float64) - RAW_LO) * 255 / RAW_SPAN), 0, 255).astype(np.uint8)

    for name, img in [("ir.png", ir), ("ir16.png", ir16), ("vis.png", vis),
                      ("vis_color.png", np.ascontiguousarray(rgb[..., ::-1]))]:
        path = out / name
        if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise SystemExit(f"could not write {path}")
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}  {img.shape[1]}x{img.shape[0]} {img.dtype} "
              f"{'x'.join(map(str, img.shape[2:])) or 'gray'}  {path.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
