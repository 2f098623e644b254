"""The report stage: leaderboard order, the self-contained HTML page, and how it renders in Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench import report_html
from agebench.config import load_params
from agebench.report import leaderboard_frame, leaderboard_markdown, write_html_report
from tests.conftest import REPO

K = 6  # agebench.report.SAMPLE_FACES
TASKS = ("aging", "rejuvenation")
COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230)]


def task_doc(joint: float, age_acc: float, id_rate: float) -> dict:
    ci = {k: [v - 0.05, v + 0.05] for k, v in {"joint": joint, "age_acc": age_acc, "id_rate": id_rate}.items()}
    return {
        "n": 30,
        "joint": joint,
        "age_acc": age_acc,
        "age_acc_rel": age_acc / 0.8,
        "id_rate": id_rate,
        "fid": 50.0 + 100 * (1 - joint),
        "kid_mean": 0.01,
        "kid_std": 0.001,
        "cycle_l1": 0.1,
        "ci95": ci,
        "breakdown": {
            "gender": {"male": {"n": 15, "joint": joint}, "female": {"n": 15, "joint": joint / 2}},
            "race": {"White": {"n": 20, "joint": joint}, "Asian": {"n": 10, "joint": joint / 3}},
        },
    }


def metrics_doc(method: str, joint: float, kind: str = "method") -> dict:
    return {
        "method": method,
        "kind": kind,
        "profile": "smoke",
        "protocol_version": 1,
        "git_revision": "abc123",
        "resolution": 128,
        "train": {"parameter_count": 1000, "steps": 10},
        "tasks": {t: task_doc(joint, 0.2 + joint, 0.9 - joint) for t in TASKS},
    }


def real_doc() -> dict:
    return {
        "method": "real",
        "kind": "reference",
        "protocol_version": 1,
        "tasks": {t: {"n": 40, "age_acc": 0.8, "age_acc_real": 0.8, "fid": 20.0} for t in TASKS},
    }


def test_leaderboard_ranks_by_joint_then_fid_and_keeps_references_apart() -> None:
    docs = [metrics_doc("b", 0.3), metrics_doc("identity", 0.1, "reference"), metrics_doc("a", 0.5), real_doc()]
    tie = metrics_doc("c", 0.3)
    tie["tasks"]["aging"]["fid"] = 10.0  # same joint as "b", lower fid: ranked above it
    df = leaderboard_frame([*docs, tie])
    assert list(df["method"]) == ["a", "c", "b", "identity", "real"]
    md = leaderboard_markdown(df)
    methods_part, reference_part = md.split("## Reference rows")
    assert "| 1 | a |" in methods_part and "| 2 | c |" in methods_part and "identity" not in methods_part
    assert "| – | identity |" in reference_part and "| – | real |" in reference_part
    assert "0.500 [0.450, 0.550]" in methods_part  # intervals shown


def face(colour: tuple[int, int, int], size: int = 128) -> np.ndarray:
    """A face-sized tile: the colour on the left half, its complement on the right."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = colour
    img[:, size // 2 :] = 255 - np.array(colour, np.uint8)
    return img


@pytest.fixture()
def pipeline_files(tmp_path: Path) -> dict:
    """The files `report` reads, as the pipeline would leave them for identity and cyclegan_agevec."""
    params = load_params(REPO / "params.yaml")
    n_faces = 40
    faces = np.stack([face(COLOURS[i % len(COLOURS)]) for i in range(n_faces)])
    data = tmp_path / "data" / "prepared"
    data.mkdir(parents=True)
    np.save(data / "faces_128.npy", faces)
    outputs, scores, live = tmp_path / "outputs", tmp_path / "data" / "scores", tmp_path / "dvclive"
    scores.mkdir(parents=True)
    present = ("identity", "cyclegan_agevec")
    rng = np.random.default_rng(0)
    real_scores = {}
    for task, rows in (("aging", np.arange(0, 20)), ("rejuvenation", np.arange(20, 40))):
        real_scores[f"{task}/rows"], real_scores[f"{task}/age_real"] = rows, rng.uniform(20, 70, len(rows))
        for m in present:
            (outputs / m).mkdir(parents=True, exist_ok=True)
            fake = faces[rows] if m == "identity" else 255 - faces[rows]
            np.savez(outputs / m / f"{task}.npz", rows=rows, fake=fake, cycle=fake)
    for m in present:
        per_face = {}
        for task, rows in (("aging", np.arange(0, 20)), ("rejuvenation", np.arange(20, 40))):
            per_face[f"{task}/rows"] = rows
            per_face[f"{task}/age_in"] = np.full(len(rows), 25.0)
            per_face[f"{task}/age_out"] = rng.uniform(20, 70, len(rows))
            per_face[f"{task}/id_dist"] = np.where(np.arange(len(rows)) == 0, np.nan, 0.3)
        np.savez(scores / f"{m}.npz", **per_face)
        curve = live / m / "plots" / "metrics" / "train"
        curve.mkdir(parents=True)
        (curve / "loss_G.tsv").write_text("timestamp\tstep\tloss_G\n0\t1\t2.0\n0\t2\t1.5\n0\t3\t1.2\n")
    np.savez(scores / "real.npz", **real_scores)
    groups = list(params.groups.schemes()["decades"])
    np.savez(
        outputs / "cyclegan_agevec" / "progression.npz",
        rows=np.arange(3),
        source=np.array(groups[:3]),
        groups=np.array(groups),
        images=np.stack([np.stack([face(COLOURS[j % 6]) for j in range(len(groups))]) for _ in range(3)]),
    )
    docs = [metrics_doc(m, 0.1 * (i + 1)) for i, m in enumerate(params.methods)] + [real_doc()]
    paths = {"scores": scores, "outputs": outputs, "data": data, "live": live}
    return {"params": params, "docs": docs, "paths": paths, "out": tmp_path / "reports", "present": present}


def build_page(files: dict) -> str:
    board = leaderboard_frame(files["docs"])
    path = write_html_report(files["params"], files["docs"], board, files["paths"], files["out"])
    return path.read_text(encoding="utf-8")


def test_html_page_is_self_contained_and_complete(pipeline_files: dict) -> None:
    page = build_page(pipeline_files)
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "url(" not in page
    # One grid row of inputs plus one per method with outputs, K faces each, for both tasks.
    faces = re.findall(r'<img class="face"', page)
    assert len(faces) == len(TASKS) * (1 + len(pipeline_files["present"])) * K
    for section in ("leaderboard", "sample-outputs", "age-vs-identity-trade-off", "estimated-age-of-the-outputs",
                    "joint-by-gender-and-race", "training-curves", "progression-across-age-groups"):  # fmt: skip
        assert f'<section id="{section}">' in page, section
    # Methods without outputs are named, not silently dropped; a failed descriptor shows as "d –".
    assert "sample grid aging: cyclegan_keras (no " in page
    assert "d –" in page and "d 0.30" in page
    # Every embedded image decodes.
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        Image.open(io.BytesIO(base64.b64decode(uri))).verify()
    strip = pipeline_files["out"] / "figures" / "progression" / "cyclegan_agevec.png"
    assert strip.is_file()


def test_html_page_bytes_are_reproducible(pipeline_files: dict) -> None:
    first = build_page(pipeline_files)
    shutil.rmtree(pipeline_files["out"])
    assert build_page(pipeline_files) == first


def test_sample_indices_spread_and_cover() -> None:
    assert list(report_html.sample_indices(4, 6)) == [0, 1, 2, 3]
    idx = report_html.sample_indices(100, 6)
    assert idx[0] == 0 and idx[-1] == 99 and len(idx) == 6 and np.all(np.diff(idx) > 0)


def chromium_driver(tmp_path: Path):
    """A headless Debian Chromium under Selenium, or a skip that says what is missing."""
    selenium = pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
    del selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium chromium-driver; .ci/run does this)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    # Flags from the machine notes: no sandbox as root, and no background connections to a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_report_renders_in_headless_chromium(pipeline_files: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    build_page(pipeline_files)
    page = pipeline_files["out"] / "index.html"
    drv = chromium_driver(tmp_path)
    try:
        drv.get(page.resolve().as_uri())
        tables = drv.find_elements(By.CSS_SELECTOR, "table.board")
        assert tables and all(t.is_displayed() for t in tables)
        assert "cyclegan_agevec" in tables[0].text and "joint" in tables[0].text
        images = drv.find_elements(By.TAG_NAME, "img")
        decoded = drv.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert len(decoded) == len(images) > 0 and all(decoded)
        # The screenshot shows the first input face where the page laid it out: its left half carries
        # the first face's colour, its right half the complement.
        first = drv.find_element(By.CSS_SELECTOR, "table.grid img.face")
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
        shot = np.asarray(Image.open(io.BytesIO(drv.get_screenshot_as_png())).convert("RGB")).astype(int)
        r = drv.execute_script(
            "const b = arguments[0].getBoundingClientRect(); return [b.x, b.y, b.width, b.height]", first
        )
        x, y, w, h = (round(v) for v in r)
        assert (w, h) == (96, 96)
        left = shot[y + 10 : y + h - 10, x + 5 : x + w // 2 - 5].reshape(-1, 3).mean(0)
        right = shot[y + 10 : y + h - 10, x + w // 2 + 5 : x + w - 5].reshape(-1, 3).mean(0)
        expect = np.array(COLOURS[0])
        assert np.abs(left - expect).max() < 12 and np.abs(right - (255 - expect)).max() < 12
        # And the leaderboard is on screen with text on it (not a blank area).
        drv.execute_script("window.scrollTo(0, 0)")
        shot = np.asarray(Image.open(io.BytesIO(drv.get_screenshot_as_png())).convert("L")).astype(int)
        b = drv.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.x, b.y, b.width, b.height]",
                               tables[0])  # fmt: skip
        x, y, w, h = (round(v) for v in b)
        region = shot[y : y + h, x : x + w]
        assert region.size and (region < 128).mean() > 0.01  # dark text pixels
    finally:
        drv.quit()
