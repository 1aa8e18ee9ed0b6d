"""The report page in a real headless browser (Debian's chromium): it renders, every image
decodes, no reference is broken, and a screenshot shows a page that is not blank."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from support.synthetic_records import DEFAULT_COMPRESSIONS, synthetic_records

from hiddencost.report import build_report
from hiddencost.report.table import table_from_records

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: install Debian's chromium (apt-get install -y "
           "chromium; `make test` does) to open the report in a real browser")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    records, tags, folders, keys = synthetic_records(
        methods=("ilm", "rlm"), compressions=DEFAULT_COMPRESSIONS[:2], shots=(1, None),
        seeds=(0, 1), epochs=3, artifacts=tmp / "artifacts")
    return build_report(table_from_records(records, tags, keys, folders), tmp / "report")


def test_page_renders_all_figures_in_chromium(page, tmp_path):
    n_img = len(re.findall(r"<img ", page.read_text()))
    assert n_img >= 12
    res = chromium(["--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                   tmp_path / "profile-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', res.stdout)
    assert m, "the page's load script did not run: " + res.stdout[:500]
    assert int(m.group(1)) == int(m.group(2)) == n_img  # every image decoded, none broken
    assert "Δ heatmaps" in res.stdout and "Summary table" in res.stdout
    # the Findings section renders first, with its verdicts and links to the figures
    dom = res.stdout
    assert dom.index('id="findings"') < dom.index('id="accuracy"')
    findings = dom[dom.index('id="findings"'):dom.index('id="accuracy"')]
    assert findings.count('<td class="') >= 8 and '<a href="#delta">' in findings
    # the check itself catches a broken image
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("<main>", '<main><img src="missing.png">', 1))
    res = chromium(["--virtual-time-budget=10000", "--dump-dom", broken.as_uri()],
                   tmp_path / "profile-broken")
    assert f'data-images-loaded="{n_img}/{n_img + 1}"' in res.stdout


def test_page_screenshot(page, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "page.png"
    res = chromium(["--window-size=1280,4000", f"--screenshot={shot}", page.as_uri()],
                   tmp_path / "profile-shot")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = imread(str(shot))
    assert pixels.shape[0] == 4000 and pixels.shape[1] == 1280
    # not a blank page: figures put many distinct colours on it
    assert pixels[..., :3].std() > 0.05
    assert len({tuple(p) for p in (pixels[::37, ::37, :3] * 255).astype(int).reshape(-1, 3)}) > 50
