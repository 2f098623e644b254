"""The report stage: leaderboard order (protocol 2 as published), the self-contained HTML page (protocol 3
docs, as the pipeline writes them now), and how it renders in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench import PROTOCOL_VERSION
from agebench.params.load import load_params
from agebench.report import html as report_html
from agebench.report import leaderboard_frame, leaderboard_markdown, render_leaderboard
from agebench.report.page import SAMPLE_FACES, build_report_page
from metrics import stats
from tests.conftest import REPO
from tests.test_leaderboard import per_face, real_v3, v3_doc

K = SAMPLE_FACES
#: The published CPU track is protocol 2 and must keep rendering as it was published.
V2 = 2
TASKS = ("aging", "rejuvenation")
COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230)]


def outcomes(n: int, ones: int, flips: tuple[int, int] = (0, 0)) -> np.ndarray:
    """n per-face 0/1 joint outcomes: the first `ones` faces succeed; then flips[0] successes turned into
    failures and flips[1] failures turned into successes (a near twin of another method's outcomes)."""
    x = np.zeros(n, bool)
    x[:ones] = True
    x[ones - flips[0] : ones] = False
    x[ones : ones + flips[1]] = True
    return x


def task_doc(joint: float | np.ndarray, age_acc: float, id_rate: float, n: int = 30) -> dict:
    faces = joint if isinstance(joint, np.ndarray) else outcomes(n, round(joint * n))
    j = float(faces.mean())
    ci = {k: [v - 0.05, v + 0.05] for k, v in {"joint": j, "age_acc": age_acc, "id_rate": id_rate}.items()}
    return {
        "n": len(faces),
        "scheme": "pair",
        "source": "young",
        "target": "old",
        "joint": j,
        "joint_faces": stats.pack_outcomes(faces),
        "age_acc": age_acc,
        "age_acc_rel": age_acc / 0.8,
        "id_rate": id_rate,
        "id_rate_dlib": id_rate / 2,
        "joint_dlib": j / 2,
        "face_fail": 3,
        "fid": 50.0 + 100 * (1 - j),
        "kid_mean": 0.01,
        "kid_std": 0.001,
        "cycle_l1": 0.1,
        "ci95": ci,
        "breakdown": {
            "gender": {"male": {"n": 15, "joint": j}, "female": {"n": 15, "joint": j / 2}},
            "race": {"White": {"n": 20, "joint": j}, "Asian": {"n": 10, "joint": j / 3}},
        },
    }


def metrics_doc(method: str, joint: float, kind: str = "method", rejuvenation: float | None = None) -> dict:
    tasks = {t: task_doc(joint, 0.2 + joint, 0.9 - joint) for t in TASKS}
    if rejuvenation is not None:
        tasks["rejuvenation"] = task_doc(rejuvenation, 0.5, 0.5)
    return {
        "method": method,
        "kind": kind,
        "profile": "smoke",
        "protocol_version": V2,
        "git_revision": "abc123",
        "resolution": 128,
        "train": {"parameter_count": 1000, "steps": 10},
        "params": {"evaluate": {"bootstrap_resamples": 1000, "bootstrap_seed": 0}},
        "tasks": tasks,
    }


def real_doc() -> dict:
    return {
        "method": "real",
        "kind": "reference",
        "profile": "smoke",
        "protocol_version": V2,
        "tasks": {
            t: {
                "n": 40,
                "age_acc": 0.8,
                "age_acc_real": 0.8,
                "fid": 20.0,
                "kid_mean": 0.002,
                "kid_std": 0.0005,
                "n_floor": 30,
                "n_rest": 170,
            }
            for t in TASKS
        },
        "face_detection": {"face_found_rate": 0.995, "ci95": [0.99, 1.0], "n": 400, "not_found": 2},
        "false_accept": {
            "pairs": 300,
            "seed": 0,
            "judges": {
                "dlib": {
                    "false_accept_rate": 0.05,
                    "ci95": [0.03, 0.08],
                    "id_fail": 0,
                    "threshold": 0.6,
                    "rule": "distance",
                },
                "sface": {
                    "false_accept_rate": 0.01,
                    "ci95": [0.0, 0.02],
                    "id_fail": 1,
                    "threshold": 0.363,
                    "rule": "cosine",
                },
            },
        },
        "fgnet": {
            "images": 55,
            "subjects": 5,
            "dlib": {
                "rule": "distance",
                "faces_found": 50,
                "by_age_gap": {"0-5": {"pairs": 12, "id_rate": 0.75, "id_fail": 2, "score": 0.52}},
            },
            "sface": {
                "rule": "cosine",
                "faces_found": 55,
                "by_age_gap": {"0-5": {"pairs": 12, "id_rate": 0.917, "id_fail": 0, "score": 0.61}},
            },
        },
    }


def test_leaderboard_ranks_by_joint_then_fid_and_keeps_references_apart() -> None:
    docs = [metrics_doc("b", 0.3), metrics_doc("identity", 0.1, "reference"), metrics_doc("a", 0.5), real_doc()]
    tie = metrics_doc("c", 0.3)
    tie["tasks"]["aging"]["fid"] = 10.0  # same joint as "b", lower fid: ranked above it
    df = leaderboard_frame([*docs, tie])
    assert list(df["method"]) == ["a", "c", "b", "identity", "real"]
    md = leaderboard_markdown(df, [*docs, tie])
    methods_part, reference_part = md.split("## Reference rows")
    # b and c have identical outcomes: their paired difference is exactly 0, so they share rank 2.
    assert "| 1 | a |" in methods_part and "| =2 | c |" in methods_part and "| =2 | b |" in methods_part
    assert "identity" not in methods_part
    assert "| – | identity |" in reference_part and "| – | real |" in reference_part
    assert "0.500 [0.450, 0.550]" in methods_part  # intervals shown


def test_each_task_is_ranked_by_its_own_joint_with_paired_rank_groups() -> None:
    n = 200
    # aging: a (0.80) clearly above b (0.50); c is b with 3 successes lost and 2 gained (0.495): tied with b.
    # rejuvenation: the reverse order, c clearly best.
    a = metrics_doc("a", 0.8, rejuvenation=outcomes(n, 40))
    b = metrics_doc("b", 0.5, rejuvenation=outcomes(n, 100))
    c = metrics_doc("c", 0.5, rejuvenation=outcomes(n, 180))
    a["tasks"]["aging"] = task_doc(outcomes(n, 160), 0.9, 0.9)
    b["tasks"]["aging"] = task_doc(outcomes(n, 100), 0.9, 0.9)
    c["tasks"]["aging"] = task_doc(outcomes(n, 100, flips=(3, 2)), 0.9, 0.9)
    docs = [c, b, a]
    df = leaderboard_frame(docs)
    ranks = {t: dict(zip(df["method"], df[f"{t}.rank"])) for t in TASKS}
    assert ranks["aging"] == {"a": "1", "b": "=2", "c": "=2"}
    assert ranks["rejuvenation"] == {"c": "1", "b": "2", "a": "3"}
    # The interval beside c (aging) is the paired one, by hand: per-face differences b - c are +1 on 3 faces
    # and -1 on 2, value 1/200.
    row = df[df["method"] == "c"].iloc[0]
    assert row["aging.joint_diff_above"] == pytest.approx(0.005)
    assert row["aging.joint_diff_above_lo"] < 0 < row["aging.joint_diff_above_hi"]
    md = leaderboard_markdown(df, docs)
    aging, rejuvenation = md.split("## rejuvenation")
    assert aging.index("| 1 | a |") < aging.index("| =2 | b |") < aging.index("| =2 | c |")
    assert rejuvenation.index("| 1 | c |") < rejuvenation.index("| 2 | b |") < rejuvenation.index("| 3 | a |")
    # The full matrix: every ordered pair, antisymmetric.
    paired = df.attrs["paired"]["aging"]
    assert len(paired) == 6
    assert paired[("a", "b")]["value"] == pytest.approx(-paired[("b", "a")]["value"]) == pytest.approx(0.3)


def test_missing_cycle_and_flags_and_second_opinion_columns() -> None:
    agecgan = metrics_doc("age_cgan", 0.4)
    agecgan["uses_scoring_networks"] = ["dlib"]
    agecgan["reconstruction"] = {
        "n": 4,
        "initial": {"dlib": {"id_rate": 0.25, "score": 0.7, "id_fail": 0}, "sface": {"id_rate": 0.0, "score": 0.1,
                    "id_fail": 1}},
        "ip": {"dlib": {"id_rate": 1.0, "score": 0.3, "id_fail": 0}, "sface": {"id_rate": 0.5, "score": 0.4,
               "id_fail": 0}},
    }  # fmt: skip
    other = metrics_doc("other", 0.3)
    del other["tasks"]["aging"]["cycle_l1"]
    docs = [agecgan, other, real_doc()]
    md = leaderboard_markdown(leaderboard_frame(docs), docs)
    aging = md.split("## rejuvenation")[0]
    header = next(line for line in aging.splitlines() if line.startswith("| rank |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "id_rate_dlib (not ranked)" in cols and "joint_dlib (not ranked)" in cols and "face_fail" in cols

    def cells(method: str) -> dict[str, str]:
        line = next(x for x in aging.splitlines() if f"| {method} |" in x)
        return dict(zip(cols, (c.strip() for c in line.strip("|").split("|"))))

    flagged, plain = cells("age_cgan"), cells("other")
    assert flagged["id_rate_dlib (not ranked)"].startswith("0.250†")
    assert flagged["joint_dlib (not ranked)"].endswith("†")
    assert "†" not in flagged["id_rate"] and "†" not in flagged["joint"]  # SFace: independent of Age-cGAN
    assert "†" not in "".join(plain.values())
    assert plain["cycle_l1"] == "–" and flagged["cycle_l1"].startswith("0.100")  # missing is "–", never 0
    assert plain["face_fail"] == "3"
    assert "† age_cgan trains or translates with dlib" in md
    # The floor at the same N beside the methods, and the real row's own findings with both judges.
    assert "Floor at the same N (real faces): fid 20.0, kid×1000 2.00 ± 0.50 — 30 real target-group faces" in aging
    assert "| sface (judge) | cosine ≥ 0.363 | 0.010 [0.000, 0.020] | 1 |" in md
    assert "| dlib (faces found 50) | 0-5 | 12 | 0.750 | 2 | distance 0.520 |" in md
    # Reconstruction with both judges; only dlib's numbers carry the dagger.
    assert "| initial | 0.250† | 0.700† | 0† | 0.000 | 0.100 | 1 |" in md


def write_docs(folder: Path, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (folder / f"{d['method']}.json").write_text(json.dumps(d), encoding="utf-8")


def test_render_leaderboard_depends_on_the_metrics_alone(tmp_path: Path) -> None:
    docs = [metrics_doc("b", 0.3), metrics_doc("a", 0.5), metrics_doc("identity", 0.1, "reference"), real_doc()]
    write_docs(tmp_path / "one" / "metrics", docs)
    md, csv = render_leaderboard(tmp_path / "one" / "metrics")
    assert render_leaderboard(tmp_path / "one" / "metrics") == (md, csv)
    # Other file names (so another file order), same documents: same bytes.
    other = tmp_path / "two" / "metrics"
    other.mkdir(parents=True)
    for i, d in enumerate(reversed(docs)):
        (other / f"{i}_{d['method']}.json").write_text(json.dumps(d), encoding="utf-8")
    assert render_leaderboard(other) == (md, csv)
    assert csv.splitlines()[0].startswith("method,kind,") and len(csv.splitlines()) == 1 + len(docs)
    assert "| 1 | a |" in md


@pytest.mark.parametrize("problem", ["protocol", "profile", "truncated"])
def test_report_refuses_other_protocols_and_mixed_profiles(tmp_path: Path, problem: str, capsys) -> None:
    import stages.report

    params = load_params(REPO / "params.yaml")
    docs = pipeline_docs(params, 20)
    if problem == "protocol":
        docs[1]["protocol_version"] = PROTOCOL_VERSION - 1
    elif problem == "profile":
        docs[0]["profile"] = "full"
    metrics = tmp_path / "reports" / "metrics"
    write_docs(metrics, docs)
    if problem == "truncated":  # a metrics file cut short: one line, not a JSONDecodeError traceback
        path = metrics / f"{params.methods[0]}.json"
        path.write_text(path.read_text()[:40])
    board = tmp_path / "reports" / "leaderboard.md"
    board.write_text("previous leaderboard\n")
    argv = ["--params", str(REPO / "params.yaml"), "--metrics", str(metrics), "--out", str(tmp_path / "reports"),
            "--runtime", str(tmp_path / "none"), "--scores", str(tmp_path / "none")]  # fmt: skip
    assert stages.report.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    expected = {"protocol": ["protocol version"], "profile": ["mix profiles", "full:"], "truncated": ["not a readable"]}
    assert all(s in err for s in expected[problem]), err
    assert board.read_text() == "previous leaderboard\n"  # nothing overwritten
    assert not (tmp_path / "reports" / "leaderboard.csv").exists()


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
    # Input file names: per-face records list the 20 inputs of each task as 0000_face.jpg ... 0019_face.jpg.
    index = "row,file,split,race,pair,cgan6,decades\n" + "".join(
        f"{r},{r % 20:04d}_face.jpg,test,0,,,\n" for r in range(40)
    )
    (data / "index.csv").write_text(index)
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
    docs = pipeline_docs(params, 20)
    paths = {"scores": scores, "outputs": outputs, "data": data, "live": live}
    return {"params": params, "docs": docs, "paths": paths, "out": tmp_path / "reports", "present": present}


def pipeline_docs(params, n: int) -> list[dict]:
    """Protocol-3 metrics documents of every configured method (identity as the reference it is) and `real`.

    cyclegan_agevec's output of the first aging face has no face (face check): joint 0, no age, no id_sim.
    """
    docs = []
    for i, m in enumerate(params.methods):
        joint = np.linspace(0.0, 0.2 * (i + 1), n)
        doc = v3_doc(m, [joint], "reference" if m == "identity" else "method")
        if m == "cyclegan_agevec":
            found = np.ones(n, int)
            found[0] = 0
            rec = per_face(joint, found)
            doc["seeds"][0]["tasks"]["aging"]["per_face"] = doc["tasks"]["aging"]["per_face"] = rec
        docs.append(doc)
    real = real_v3()
    real.update({k: v for k, v in real_doc().items() if k in ("face_detection", "false_accept", "fgnet")})
    return [*docs, real]


def build_page(files: dict) -> str:
    board = leaderboard_frame(files["docs"])
    page = build_report_page(files["params"], files["docs"], board, files["paths"])
    files["page"] = page
    return page.html.decode("utf-8")


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
    # The paired-difference matrix (every method against every other, both tasks) and the real row's findings.
    n = len(pipeline_files["params"].methods)
    assert '<section id="paired-differences-in-joint">' in page
    assert page.count('<table class="board matrix">') == len(TASKS)
    assert page.count('<td class="sep">') + page.count("<td>+") + page.count("<td>-") >= len(TASKS) * n * (n - 1)
    assert '<section id="real-faces">' in page and "False-accept rate on 300 pairs" in page
    assert "Floor at the same N (real faces)" in page
    # Methods without outputs are named, not silently dropped; captions come from the per-face records: an
    # output the face check rejected says "no face" (exactly one: cyclegan_agevec's first aging face).
    assert "sample grid aging: cyclegan_keras (no " in page
    assert page.count('<div class="cap">no face</div>') == 1
    assert "sim 0.50" in page and "age 25" in page  # outputs' identity score, inputs' estimated age
    # Every embedded image decodes.
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        Image.open(io.BytesIO(base64.b64decode(uri))).verify()
    assert set(pipeline_files["page"].strips) == {"cyclegan_agevec"}
    # The generated sentences under each matrix.
    assert "Rank groups on aging: " in page and "is above no change (identity) on aging: +" in page


def test_face_free_charts_are_written_as_the_page_shows_them(pipeline_files: dict) -> None:
    """figures/charts/ (published with results) holds exactly the page's charts, byte for byte, and none of
    the page's face images (sample grids, progression strips)."""
    page = build_page(pipeline_files)
    charts = pipeline_files["page"].charts
    expected = {f"{kind}_{task}.png" for kind in ("tradeoff", "age_distribution", "breakdown") for task in TASKS}
    assert set(charts) == expected | {"training_curves.png"}
    embedded = {base64.b64decode(u) for u in re.findall(r'src="data:image/png;base64,([^"]+)"', page)}
    faces = {
        base64.b64decode(u) for u in re.findall(r'<img class="face"[^>]*src="data:image/png;base64,([^"]+)"', page)
    }
    strip = pipeline_files["page"].strips["cyclegan_agevec"]
    assert faces and strip in embedded
    for name, png in charts.items():
        assert png in embedded, name
        assert png not in faces | {strip}, name


def test_html_page_bytes_are_reproducible(pipeline_files: dict) -> None:
    first = build_page(pipeline_files)
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

    page = tmp_path / "index.html"
    page.write_text(build_page(pipeline_files), encoding="utf-8")
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


def test_stage_writes_exactly_what_render_leaderboard_gives(pipeline_files: dict, tmp_path: Path) -> None:
    import stages.report

    metrics, runtime = tmp_path / "reports" / "metrics", tmp_path / "reports" / "runtime"
    write_docs(metrics, pipeline_files["docs"])
    runtime.mkdir()
    (runtime / "identity.json").write_text(json.dumps({"train_seconds": 12.0, "hardware": "2 CPU cores"}))
    paths = pipeline_files["paths"]
    argv = ["--params", str(REPO / "params.yaml"), "--metrics", str(metrics), "--runtime", str(runtime),
            "--scores", str(paths["scores"]), "--outputs", str(paths["outputs"]), "--data", str(paths["data"]),
            "--live", str(paths["live"]), "--out", str(tmp_path / "reports")]  # fmt: skip
    assert stages.report.main(argv) == 0
    md, csv = render_leaderboard(metrics)  # runtime found beside the metrics folder
    out = tmp_path / "reports"
    assert (out / "leaderboard.md").read_text(encoding="utf-8") == md
    assert (out / "leaderboard.csv").read_text(encoding="utf-8") == csv
    assert "| identity | reference | 1 | 128 | 1,000 | 12 | 2 CPU cores |" in md
    # `agebench leaderboard` on the stage's metrics gives its leaderboard.md byte for byte.
    from agebench.cli import main

    assert main(["leaderboard", str(metrics), "--out", str(tmp_path / "rebuilt.md")]) == 0
    assert (tmp_path / "rebuilt.md").read_bytes() == (out / "leaderboard.md").read_bytes()
    # The page, its face-free charts and the progression strip are written as the page builder gives them.
    page = build_page(pipeline_files)
    assert (out / "index.html").read_text(encoding="utf-8") == page
    charts = pipeline_files["page"].charts
    assert {p.name: p.read_bytes() for p in (out / "figures" / "charts").iterdir()} == dict(charts)
    assert (out / "figures" / "progression" / "cyclegan_agevec.png").read_bytes() == pipeline_files["page"].strips[
        "cyclegan_agevec"
    ]


def test_joint_rebuilt_from_per_face_scores_matches_the_joint_rule() -> None:
    from agebench.report import joint_from_scores

    doc = metrics_doc("m", 0.5)
    doc["params"]["groups"] = {"pair": {"young": [20, 29], "old": [50, 59]}}
    scores = {
        "aging/age_out": np.array([55.0, 55.0, 40.0, 59.9, 60.0, np.nan]),
        "aging/id_sim": np.array([0.5, 0.2, 0.9, 0.363, 0.9, 0.9]),
        "aging/face_found": np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
    }
    # By hand: in [50, 60) and cosine >= 0.363 and a face found.
    assert joint_from_scores(doc, scores, "aging").tolist() == [1, 0, 0, 1, 0, 0]
    assert joint_from_scores(doc, {**scores, "aging/joint": np.array([0.0, 1.0])}, "aging").tolist() == [0, 1]
    assert joint_from_scores(doc, {"aging/age_out": scores["aging/age_out"]}, "aging") is None
