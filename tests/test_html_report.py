"""`python -m experiments.compare RUNS --html report.html`: one self-contained page with every run, its
pictures and the learning curves; checked as text and as a real headless Chromium renders it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from experiments.compare import main as compare
from experiments.run import main as run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FIRSTLIGHT_RUN_ID", raising=False)
        for lr in ("0.003", "0.0003"):
            args = ["--config", "cnn_digits", "--trainer.max_epochs=1", "--run.logger=none", "--model.lr", lr]
            assert run([*args, "--run.root", str(root)]) == 0
    return root / "cnn_digits"


@pytest.fixture(scope="module")
def page(two_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    assert compare([str(two_runs), "--html", str(path)]) == 0
    return path


class Elements(HTMLParser):
    """The page's tags with their attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_holds_every_run_its_pictures_and_the_curves(two_runs: Path, page: Path) -> None:
    text = page.read_text()
    parser = Elements()
    parser.feed(text)
    tags = [tag for tag, _ in parser.tags]
    run_dirs = sorted(two_runs.iterdir())
    assert tags.count("tr") == 1 + len(run_dirs)  # the header and a row per run
    assert tags.count("section") == len(run_dirs) and tags.count("svg") == 2  # curves against step and time
    images = [attrs["src"] or "" for tag, attrs in parser.tags if tag == "img"]
    expected = [path.read_bytes() for run_dir in run_dirs for path in (run_dir / "report").glob("*.png")]
    assert len(images) == len(expected) == 4 * len(run_dirs)  # confusion and samples, validation and test
    decoded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in images]
    assert sorted(decoded) == sorted(expected)  # each run's pictures, byte for byte
    for run_dir in run_dirs:
        assert f"cnn_digits/{run_dir.name}" in text
    # Self-contained: nothing fetched, nothing run (url(#id) is an SVG clip path within the page).
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)|<link|<script|@import|url\((?!#)""", text, re.I)


def test_the_page_is_never_overwritten_without_asking_and_bad_paths_are_one_line(
    two_runs: Path, page: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = page.read_bytes()
    assert compare([str(two_runs), "--html", str(page)]) == 2
    assert capsys.readouterr().err == f"error: --html {page}: exists; give another path, or --overwrite to replace it\n"
    assert page.read_bytes() == before
    assert compare([str(two_runs), "--html", str(page), "--overwrite"]) == 0
    capsys.readouterr()
    missing = tmp_path / "nowhere" / "report.html"
    assert compare([str(two_runs), "--html", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and not missing.parent.exists()
    (tmp_path / "empty").mkdir()
    assert compare([str(tmp_path / "empty"), "--html", str(tmp_path / "r.html")]) == 2
    assert "no runs" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def test_with_html_alone_no_png_is_written(two_runs: Path, in_tmp: Path) -> None:
    assert compare([str(two_runs), "--html", "r.html"]) == 0
    assert sorted(p.name for p in in_tmp.iterdir()) == ["r.html"]
    assert compare([str(two_runs), "--html", "s.html", "--output", "c.png"]) == 0
    assert (in_tmp / "c.png").is_file()


# What a browser makes of it

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("FIRSTLIGHT_REQUIRE_CHROMIUM"))

# Written into the page's copy: what rendered, read back from the DOM Chromium dumps.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const charts = [...document.querySelectorAll("svg")].map(s => s.getBoundingClientRect().width);
  const rows = document.querySelectorAll("#runs tbody tr").length;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({images, charts, rows});
  document.body.appendChild(probe);
});
</script>"""


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with no way out: every host name resolves to nothing, so a page that needed the
    network would show its gaps."""
    command = [
        CHROMIUM or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={cwd / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="no chromium: apt-get install chromium (.ci/run does, and sets FIRSTLIGHT_REQUIRE_CHROMIUM=1)",
)
def test_the_page_renders_in_headless_chromium(two_runs: Path, page: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "FIRSTLIGHT_REQUIRE_CHROMIUM is set and chromium is missing: apt-get install chromium"
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dumped = chromium("--dump-dom", probed.as_uri(), cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, dumped.stdout[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    runs = len(list(two_runs.iterdir()))
    assert probe["rows"] == runs
    assert len(probe["images"]) == 4 * runs
    assert all(done and width >= 300 and height >= 150 for done, width, height in probe["images"]), probe
    assert len(probe["charts"]) == 2 and all(width > 300 for width in probe["charts"])

    shot = tmp_path / "shot.png"
    taken = chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri(), cwd=tmp_path
    )
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100  # text, table, curves: not a blank page
        white = max(colours)[0] / (1280 * 2000)
        assert white < 0.95
