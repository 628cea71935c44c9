"""The report page in a real headless browser (Debian's chromium): it loads without
errors, every figure renders non-blank, sorting and the sample browser work, model
markup stays text, and a screenshot is kept in test-artifacts/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.analysis.report import write_report
from tests.test_report import synthetic_records, write_sweep_folder

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network and a root user (see the project's test set-up in the Makefile).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (make test tries `apt-get install -y chromium`; without root or network "
           "it cannot), so the report page is not checked in a browser",
)

# Runs before the page's own code: records errors, then checks the page once it has loaded.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () {
  const original = console.error;
  console.error = function () {
    window.__errors.push(Array.from(arguments).join(" "));
    original.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  const figures = Array.from(document.querySelectorAll("img.figure")).map(function (img) {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width || 1, canvas.height || 1).data;
    let colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) { colours.add(data[i] + "," + data[i + 1] + "," + data[i + 2]); }
    return { width: img.naturalWidth, height: img.naturalHeight, colours: colours.size };
  });
  const header = Array.from(document.querySelectorAll("#summary th"))
    .find(function (th) { return th.textContent === "accuracy"; });
  header.click();
  const col = Number(header.dataset.col);
  const sorted = Array.from(document.querySelectorAll("#summary tbody tr"))
    .map(function (tr) { return Number(tr.cells[col].dataset.sort); });
  const firstPage = document.querySelectorAll("#samples tbody tr").length;
  document.getElementById("next").click();
  const pageText = document.getElementById("page").textContent;
  const search = document.getElementById("search");
  search.value = "chain_sum-s1-7"; search.dispatchEvent(new Event("input"));
  const found = document.querySelectorAll("#samples tbody tr").length;
  document.querySelector("#samples tbody tr").click();
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({
    errors: window.__errors, figures: figures, sorted: sorted, firstPage: firstPage, pageText: pageText,
    found: found, detail: document.getElementById("detail").textContent,
    injected: document.querySelectorAll("b.injected").length, pwned: window.__pwned === 1,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = write_sweep_folder(tmp_path_factory.mktemp("browser") / "sweep", synthetic_records(problems=40))
    write_report(folder)
    return folder / "report.html"


def test_report_loads_without_errors_and_figures_render(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    done = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                     probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'id="probe-result"' in done.stdout, "the page never finished loading:\n" + done.stderr[-2000:]
    raw = done.stdout.split('<pre id="probe-result">', 1)[1].split("</pre>", 1)[0]
    result = json.loads(raw.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))

    assert result["errors"] == []
    assert len(result["figures"]) == 6  # the synthetic sweep has no variant axis and no soft decoder
    for figure in result["figures"]:
        assert figure["width"] > 200 and figure["height"] > 200
        assert figure["colours"] > 3, "a figure is blank"
    assert result["sorted"] == sorted(result["sorted"])
    # 2 envs x 2 seeds x 40 problems x 8 variants = 1280 samples, 50 a page.
    assert result["firstPage"] == 50 and "page 2 of 26 (1280 samples)" in result["pageText"]
    assert result["found"] == 8
    assert "chain_sum-s1-7" in result["detail"] and '<b class="injected">' in result["detail"]
    assert result["injected"] == 0 and result["pwned"] is False


def test_screenshot_is_saved_as_a_test_artifact(page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2200",
                     f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
