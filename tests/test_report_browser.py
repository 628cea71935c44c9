"""The report page in a real headless browser (Debian's chromium): it loads without
errors, every figure renders non-blank, sorting and the sample browser work, model
markup stays text, and a screenshot is kept in test-artifacts/."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.analysis.report import TEXT_LIMIT, write_report
from harness.analysis.token_view import NO_TOKEN_TEXTS
from tests.helpers.report_folders import synthetic_records, write_sweep_folder

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

# Runs before the page's own code: records errors and console errors in window.__errors.
ERROR_CAPTURE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () {
  const original = console.error;
  console.error = function () {
    window.__errors.push(Array.from(arguments).join(" "));
    original.apply(console, arguments);
  };
})();
</script>"""
# Then checks the page once it has loaded.
PROBE = ERROR_CAPTURE + """<script>
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


def _probed(html: str, probe: str, tmp_path: Path, *flags: str) -> dict:
    """Load `html` with `probe` run before the page's code; the JSON the probe leaves in #probe-result."""
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>\n" + probe, 1))
    done = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                     *flags, probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'id="probe-result"' in done.stdout, "the page never finished loading:\n" + done.stderr[-2000:]
    raw = done.stdout.split('<pre id="probe-result">', 1)[1].split("</pre>", 1)[0]
    return json.loads(raw.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = write_sweep_folder(tmp_path_factory.mktemp("browser") / "sweep", synthetic_records(problems=40))
    write_report(folder)
    return folder / "report.html"


def test_report_loads_without_errors_and_figures_render(page, tmp_path):
    result = _probed(page.read_text(), PROBE, tmp_path)

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


# The token view: a ReDuMix record whose tokens hold markup, a greedy one, one cut at the
# page's text limit, and one saved before records carried token texts.
TOKEN_TEXTS = ["The ", "<b>x</b>", " &amp; ", "y", "", " <script>window.__pwned = 1</script>", "\n", "é!"]
LOG_RATIO = [0.0, 1.0, -0.5, 2.0, None, -2.0, 0.25, -1.0]
JS = [0.01, 0.2, 0.05, 0.4, 0.0, 0.3, 0.1, 0.6]
GREEDY_LOGPROB = [-0.1, -2.5, -0.01, -5.0, -1.0, -0.5, -3.0, -0.2]
LONG = 1000  # tokens of 5 characters: 5000 characters, over the page's TEXT_LIMIT

TOKEN_PROBE = ERROR_CAPTURE + """<script>
window.addEventListener("load", function () {
  function open(pid, decoder, grid) {
    const search = document.getElementById("search");
    search.value = pid; search.dispatchEvent(new Event("input"));
    const row = Array.from(document.querySelectorAll("#samples tbody tr")).find(function (tr) {
      const cells = Array.from(tr.cells).map(function (td) { return td.textContent; });
      return cells[1] === decoder && cells[2] === grid;
    });
    row.click();
    return document.querySelector("#detail dd.tokens");
  }
  function read(dd) {
    const select = dd.querySelector("select.token-stat");
    return {
      tokens: Array.from(dd.querySelectorAll("span.tok")).map(function (span) {
        return { text: span.textContent, bg: getComputedStyle(span).backgroundColor, title: span.title };
      }),
      options: select ? Array.from(select.options).map(function (o) { return o.textContent; }) : [],
      legend: Array.from(dd.querySelectorAll(".token-legend")).map(function (l) { return l.textContent; }).join(" | "),
      text: dd.textContent, elements: dd.querySelectorAll("b, script, img, a, iframe").length,
    };
  }
  const mixed = open("basic_arithmetic-s0-0", "redumix", "lam=0.5 binary");
  const byLogRatio = read(mixed);
  const select = mixed.querySelector("select.token-stat");
  select.value = "1"; select.dispatchEvent(new Event("change"));
  const byJs = read(mixed);
  const greedy = read(open("basic_arithmetic-s0-0", "greedy", "-"));
  const cut = read(open("basic_arithmetic-s0-1", "greedy", "-"));
  const old = read(open("basic_arithmetic-s0-0", "sample", "-"));
  const oldCompletion = document.getElementById("detail").textContent;
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({
    errors: window.__errors, byLogRatio: byLogRatio, byJs: byJs, greedy: greedy, cut: cut, old: old,
    oldCompletion: oldCompletion, injected: document.querySelectorAll("b").length, pwned: window.__pwned === 1,
    resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
  });
  document.body.appendChild(out);
});
</script>"""


def _token_records() -> list[dict]:
    records = synthetic_records(problems=2)
    pick = {(r["problem_id"], r["decoder"], r["lambda"], r["feedback_policy"]): r for r in records}
    ids = list(range(100, 100 + len(TOKEN_TEXTS)))
    pick["basic_arithmetic-s0-0", "redumix", 0.5, "binary"]["steps"] = {
        "token_ids": ids, "token_texts": TOKEN_TEXTS, "log_ratio_p1_p2": LOG_RATIO, "js_p1_p2": JS,
        "kl_mix_p1": [0.0] * len(ids)}
    pick["basic_arithmetic-s0-0", "greedy", None, None]["steps"] = {
        "token_ids": ids, "token_texts": TOKEN_TEXTS, "logprob": GREEDY_LOGPROB}
    pick["basic_arithmetic-s0-1", "greedy", None, None]["steps"] = {
        "token_ids": list(range(LONG)), "token_texts": [f"{i:04d}|" for i in range(LONG)],
        "logprob": [-i / LONG for i in range(LONG)]}
    pick["basic_arithmetic-s0-0", "sample", None, None]["steps"] = {"token_ids": ids, "logprob": GREEDY_LOGPROB}
    return records


def _page_requests(net_log: Path) -> list[str]:
    """Addresses the page asked the network stack for, from Chromium's net log. Chromium's own
    background requests (its clock, account checks) have no origin and are left out; a
    request from a file:// page has the initiator "file://"."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(c) for c in re.findall(r"\d+", colour)[:3])


def _darkness(colour: str) -> int:
    return 765 - sum(_rgb(colour))


def _title_value(title: str) -> float | None:
    value = title.rsplit("= ", 1)[1]
    return None if value == "n/a" else float(value)


def _assert_shading_follows(tokens: list[dict], values: list, diverging: bool) -> None:
    """Each token's shade is its value's distance from 0 over the record's largest distance
    (0 unshaded, the largest in full colour, no value no shade); a diverging statistic's sign
    picks one of two hues."""
    assert [_title_value(t["title"]) for t in tokens] == values
    scale = max(abs(v) for v in values if v is not None)
    hues: dict[bool, list[tuple[float, str]]] = {}
    for token, v in zip(tokens, values, strict=True):
        if v is None:
            assert token["bg"] == "rgba(0, 0, 0, 0)"
        elif v == 0:
            assert token["bg"] == "rgb(255, 255, 255)"
        else:
            hues.setdefault(diverging and v < 0, []).append((abs(v), token["bg"]))
    if diverging:
        assert set(hues) == {False, True}
        (red_up, _, blue_up), (red_down, _, blue_down) = _rgb(hues[False][0][1]), _rgb(hues[True][0][1])
        assert blue_up > red_up and red_down > blue_down  # above 0 one hue, below it the other
    for shaded in hues.values():
        for (d1, c1), (d2, c2) in itertools.combinations(shaded, 2):
            assert (d1 < d2) == (_darkness(c1) < _darkness(c2)) and (d1 == d2) == (c1 == c2), (d1, c1, d2, c2)
        distance, full = max(shaded)
        if distance == scale:  # the hue's full colour is on the page: every shade is a fraction of it
            for d, colour in shaded:
                assert _darkness(colour) / _darkness(full) == pytest.approx(d / scale, abs=0.02), (d, colour)


@pytest.fixture(scope="module")
def token_page(tmp_path_factory):
    folder = write_sweep_folder(tmp_path_factory.mktemp("tokens") / "sweep", _token_records())
    write_report(folder)
    return folder / "report.html"


def test_token_view_shades_each_token_by_its_value_and_keeps_markup_as_text(token_page, tmp_path):
    html = token_page.read_text()
    # Self-contained: every src/href is a data: URI or a fragment.
    for link in re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.IGNORECASE):
        assert link.startswith(("data:", "#")), link
    net_log = tmp_path / "net-log.json"
    result = _probed(html, TOKEN_PROBE, tmp_path, f"--log-net-log={net_log}")

    assert result["errors"] == []
    assert result["injected"] == 0 and result["pwned"] is False
    assert all(name.startswith("data:") for name in result["resources"]), result["resources"]
    assert _page_requests(net_log) == []

    mixed = result["byLogRatio"]
    assert [t["text"] for t in mixed["tokens"]] == TOKEN_TEXTS  # every token, in order, as text
    assert mixed["elements"] == 0
    assert mixed["options"] == ["log P1 - log P2 of the token", "JS(P1, P2)"]  # what the record has, no more
    assert "P1 pulled it in" in mixed["legend"] and "P2 pulled it in" in mixed["legend"]
    _assert_shading_follows(mixed["tokens"], LOG_RATIO, diverging=True)
    assert _rgb(mixed["tokens"][5]["bg"]) == (230, 85, 13) and _rgb(mixed["tokens"][3]["bg"]) == (49, 130, 189)
    assert "JS(P1, P2) = 0.2" in result["byJs"]["tokens"][1]["title"]
    _assert_shading_follows(result["byJs"]["tokens"], JS, diverging=False)

    greedy = result["greedy"]
    assert [t["text"] for t in greedy["tokens"]] == TOKEN_TEXTS and greedy["options"] == ["log-prob of the token"]
    _assert_shading_follows(greedy["tokens"], GREEDY_LOGPROB, diverging=False)

    # Cut at the page's text limit: texts and values cut at the same token, and the page says so.
    cut = result["cut"]["tokens"]
    shown = TEXT_LIMIT // 5
    assert len(cut) == shown and f"the first {shown} of {LONG} tokens shown" in result["cut"]["text"]
    assert cut[-1]["text"] == f"{shown - 1:04d}|" and _title_value(cut[-1]["title"]) == -(shown - 1) / LONG

    # A record saved before token texts: no token view, the plain completion still there.
    assert result["old"]["tokens"] == [] and NO_TOKEN_TEXTS in result["old"]["text"]
    assert "final completion" in result["oldCompletion"]


# A report over two runs: the run filter narrows the samples to one run, the cross-run figure renders.
RUNS_PROBE = ERROR_CAPTURE + """<script>
window.addEventListener("load", function () {
  const runs = document.getElementById("f-run");
  const all = document.getElementById("page").textContent;
  runs.value = "b"; runs.dispatchEvent(new Event("input"));
  const firstCells = Array.from(document.querySelectorAll("#samples tbody tr")).map(function (tr) {
    return tr.cells[0].textContent;
  });
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({
    errors: window.__errors, options: Array.from(runs.options).map(function (o) { return o.value; }),
    all: all, onlyB: document.getElementById("page").textContent, firstCells: firstCells,
    captions: Array.from(document.querySelectorAll("figcaption")).map(function (c) { return c.textContent; }),
  });
  document.body.appendChild(out);
});
</script>"""


def test_a_report_over_two_runs_filters_samples_by_run(tmp_path):
    from harness.analysis.joined_report import write_joined_report

    a = write_sweep_folder(tmp_path / "a", synthetic_records(0, problems=5))
    b = write_sweep_folder(tmp_path / "b", synthetic_records(1, problems=5))
    report = write_joined_report([a, b], tmp_path / "both")
    result = _probed(report.html.read_text(), RUNS_PROBE, tmp_path)
    assert result["errors"] == []
    assert result["options"] == ["", "a", "b"]
    # 2 envs x 2 seeds x 5 problems x 8 variants = 160 samples a run.
    assert "(320 samples)" in result["all"] and "(160 samples)" in result["onlyB"]
    assert set(result["firstCells"]) == {"b"}
    assert any(c.startswith("Paired differences across runs, against a") for c in result["captions"])
