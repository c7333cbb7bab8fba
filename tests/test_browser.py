"""The whole walk in a real browser: Streamlit server + headless Chromium (Playwright).

A person's walk on the demo digits with the default backbone
(``tf_efficientnet_lite0``, packaged offline ImageNet weights): tick the last
two layer groups, keep the demo data, train one epoch at 32 px, reload the
page while the run is going (the run must be found again from the store),
wait for it to finish and look at the comparison.

Needs Debian's Chromium at /usr/bin/chromium (Playwright's own browser
download is not used) and the ``playwright`` Python package; skipped without
them. Screenshots of every step go to ``$FT_SCREENSHOTS`` if set, else into
the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Milliseconds to wait for a page step (Streamlit reruns, model descriptions, the demo data).
STEP_MS = 90_000
#: Milliseconds to wait for the run to finish (measured: 20-40 s on 2 busy cores, one torch thread each).
RUN_MS = 480_000




def _chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if not found:
        pytest.skip("Chromium not found at /usr/bin/chromium: install Debian's chromium package")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "ftcore_home"
    h.mkdir()
    monkeypatch.setenv("FTCORE_HOME", str(h))
    return h


@pytest.fixture
def server(home, tmp_path):
    """``streamlit run app.py`` on a free port with the run store in `home`; yields its URL."""
    port = _free_port()
    url = f"http://localhost:{port}"
    env = dict(os.environ, FTCORE_HOME=str(home))
    # One torch thread per process (the training worker inherits it): on a small, busy machine two
    # spinning OpenMP threads per process are several times slower than one.
    env["OMP_NUM_THREADS"] = "1"
    # Train on the CPU even where a GPU is present: the same code path and timings everywhere.
    env["CUDA_VISIBLE_DEVICES"] = ""
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer {url}/_stcore/health in 90 s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        # Training workers run in their own sessions: stop the ones this test started.
        from ftcore.jobs.local import cancel_run
        from ftcore.runs.store import ACTIVE, RunStore

        if (home / "runs.sqlite3").exists():
            store = RunStore(home)
            for rec in store.list(status=ACTIVE):
                cancel_run(store, rec.run_id)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.returncode not in (0, -15):
            print(f"streamlit log:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("FT_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not importable: pip install playwright (the browser download is not needed)")
    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_walk_demo_digits_train_reload_and_compare(browser, server, home, shots):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        _walk(page, ctx, server, home, shots)
    except BaseException:
        try:
            page.screenshot(path=str(shots / "failure.png"))
        except Exception:  # noqa: BLE001 - the test's own error matters, not the screenshot's
            pass
        raise
    finally:
        ctx.close()


def test_first_request_for_a_page_url_goes_through_the_router(browser, server, shots):
    """A bookmarked /train opened first after a server start is routed by app.py, not run alone."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{server}/train")
        expect(page.get_by_role("heading", name="4. Train")).to_be_visible(timeout=90_000)
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_text("1. Backbone")).to_be_visible(timeout=30_000)
        expect(nav.get_by_text("common", exact=True)).to_have_count(0)
        expect(page.get_by_test_id("stSidebar").get_by_text("Your choices")).to_be_visible()
        page.screenshot(path=str(shots / "00_first_request_train.png"))
    finally:
        ctx.close()


def _walk(page, ctx, server: str, home: Path, shots: Path) -> None:
    from playwright.sync_api import expect

    from ftcore.runs.store import RunStore

    expect.set_options(timeout=STEP_MS)
    page.set_default_timeout(STEP_MS)
    times: dict[str, float] = {}
    t0 = time.monotonic()

    def shot(name: str, height: int = 1000) -> None:
        """A screenshot of the window; `height` px tall to show a long page whole (its main area scrolls)."""
        page.mouse.move(5, 995)  # no tooltip over the page
        if height != 1000:
            page.set_viewport_size({"width": 1400, "height": height})
            page.wait_for_timeout(500)  # charts re-lay out
        page.screenshot(path=str(shots / f"{name}.png"))
        if height != 1000:
            page.set_viewport_size({"width": 1400, "height": 1000})

    def main():
        return page.locator('[data-testid="stMain"]')

    def no_exception() -> None:
        assert page.locator('[data-testid="stException"]').count() == 0, \
            page.locator('[data-testid="stException"]').first.inner_text()

    def idle() -> None:
        """Wait until the script run triggered by the last action is over."""
        page.wait_for_timeout(300)
        expect(page.get_by_test_id("stStatusWidget").get_by_text("Running")).to_have_count(0)

    def go(title: str) -> None:
        """Open a page from the sidebar; fail at once on an exception shown instead of the page."""
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        heading = main().get_by_role("heading", name=title)
        expect(heading.or_(main().get_by_test_id("stException")).first).to_be_visible()
        no_exception()
        expect(heading).to_be_visible()

    # 1. Backbone: the default model with packaged offline weights.
    page.goto(server)
    expect(main().get_by_role("heading", name="1. Backbone")).to_be_visible()
    expect(main().get_by_text("offline, packaged")).to_be_visible()
    expect(main().get_by_role("combobox", name=re.compile(r"^Model"))).to_have_value("tf_efficientnet_lite0")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Your choices")).to_be_visible()
    no_exception()
    shot("01_backbone")
    times["backbone"] = time.monotonic() - t0

    # 2. Layers: the last two groups.
    go("2. Layers")
    boxes = main().get_by_test_id("stCheckbox").filter(has_not_text="sub-block")  # groups, not their sub-blocks
    # tf_efficientnet_lite0: stem, blocks.0-5, "blocks.6 + conv_head + bn2", head. Waiting for all of them: on a
    # loaded machine the page can still be drawing when the first box appears.
    n_boxes = 9
    expect(boxes).to_have_count(n_boxes)
    trainable = main().get_by_test_id("stMetric").filter(has_text="Trainable parameters")
    before = trainable.get_by_test_id("stMetricValue").inner_text()
    main().get_by_role("button", name="Last 2 groups").click()
    expect(trainable.get_by_test_id("stMetricValue")).not_to_have_text(before)
    idle()
    # The boxes follow the preset in the same rerun as the metric; wait for them on a loaded machine.
    expect(boxes.nth(n_boxes - 3).locator("input")).to_be_checked()
    expect(boxes.nth(n_boxes - 4).locator("input")).not_to_be_checked()
    checked = [boxes.nth(i).locator("input").is_checked() for i in range(n_boxes)]
    # Body groups: only the last two ticked; the head (last box) always ticked.
    assert checked == [False] * (n_boxes - 3) + [True, True, True], checked
    assert boxes.nth(n_boxes - 1).locator("input").is_disabled()
    # The shared sidebar follows the choice made on this page, in the same run.
    expect(sidebar.get_by_text("2 groups ticked")).to_be_visible()
    no_exception()
    shot("02_layers_last2")
    times["layers"] = time.monotonic() - t0

    # 3. Data: the demo digits, 10 classes.
    go("3. Data")
    expect(main().get_by_text("10 classes, 1797 readable images")).to_be_visible()
    expect(main().get_by_test_id("stDataFrame").first).to_be_visible()
    expect(main().get_by_test_id("stImage").first).to_be_visible()
    expect(sidebar.get_by_text("demo digits")).to_be_visible()
    no_exception()
    shot("03_data_demo", height=2000)
    times["data"] = time.monotonic() - t0

    # 4. Train: 32 px, one epoch.
    go("4. Train")
    expect(main().get_by_text("demo digits").first).to_be_visible()
    expect(main().get_by_text("2 groups ticked").first).to_be_visible()
    expect(sidebar.get_by_text("demo digits")).to_be_visible()
    for label, value in (("Image size (px)", "32"), ("Epochs", "1")):
        box = main().get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        idle()
        expect(main().get_by_role("spinbutton", name=label, exact=True)).to_have_value(value)
    shot("04_train_settings")
    main().get_by_role("button", name="Start training").click()
    run_heading = main().get_by_role("heading", name=re.compile(r"^Run \d{8}-\d{6}-\w+"))
    expect(run_heading).to_be_visible()
    store = RunStore(home)
    runs = store.list()
    assert len(runs) == 1
    rec = runs[0]
    run_id = rec.run_id
    assert (rec.config.backbone.name, rec.config.backbone.weights) == ("tf_efficientnet_lite0", "auto")
    assert (rec.config.train.img_size, rec.config.train.epochs) == (32, 1)
    assert rec.config.freeze.unfreeze.startswith("groups:") and len(rec.config.freeze.unfreeze[7:].split(",")) == 2
    expect(main().get_by_text(f"Run {run_id}", exact=True)).to_be_visible()
    expect(main().get_by_test_id("stProgress")).to_be_visible()
    no_exception()
    shot("05_train_started")
    times["started"] = time.monotonic() - t0

    # A browser refresh, once the worker is training, finds the run again, still going.
    deadline = time.monotonic() + RUN_MS / 1000
    while not (store.get(run_id).status == "running" and store.get(run_id).step > 0):
        assert store.get(run_id).active, f"the run ended before it trained a step: {store.get(run_id).error}"
        assert time.monotonic() < deadline, f"the run did not start training: {store.get(run_id).message}"
        time.sleep(0.5)
    shot("06_train_running")
    page.reload()
    expect(main().get_by_role("heading", name="4. Train")).to_be_visible()
    expect(main().get_by_text(f"Run {run_id}", exact=True)).to_be_visible()
    expect(main().get_by_test_id("stProgress")).to_be_visible()
    expect(main().get_by_test_id("stProgress")).to_contain_text(re.compile(r"epoch 1/1, step \d+ of \d+"))
    expect(main().get_by_role("button", name="Cancel")).to_be_visible()
    expect(sidebar.get_by_text(f"Run {run_id}")).to_be_visible()
    assert store.get(run_id).active, "the run ended before the reload could be checked"
    no_exception()
    shot("07_train_after_reload")

    # A second tab, opened at the app's address with no run id, finds it too.
    tab = ctx.new_page()
    tab.goto(f"{server}/train")
    expect(tab.get_by_test_id("stMain").get_by_text(f"Run {run_id}", exact=True)).to_be_visible()
    tab.close()
    times["reloaded"] = time.monotonic() - t0

    # Live progress until it is finished.
    expect(main().get_by_text("Finished: both models are trained")).to_be_visible(timeout=RUN_MS)
    times["finished"] = time.monotonic() - t0
    rec = store.get(run_id)
    assert rec.status == "finished", rec.error
    expect(main().get_by_test_id("stPlotlyChart").first).to_be_visible()
    expect(main().get_by_text(re.compile(r"fine-tuned: validation accuracy"))).to_be_visible()
    expect(main().get_by_text(re.compile(r"frozen baseline: validation accuracy"))).to_be_visible()
    expect(sidebar.get_by_text("No run in progress.")).to_be_visible()
    # The page was drawn while the run trained; when it ends, Start is offered again without touching anything.
    expect(main().get_by_role("button", name="Start training")).to_be_enabled(timeout=10_000)
    expect(main().get_by_text("is training. One run at a time")).to_have_count(0)
    t_idle = time.monotonic()
    expect(sidebar.get_by_text(re.compile(r"^Run \S+, about .* left$"))).to_have_count(0)
    times["sidebar_clean_after"] = time.monotonic() - t_idle
    no_exception()
    shot("08_train_finished", height=1700)

    # 5. Compare: both models' metrics and confusion matrices.
    go("5. Compare")
    expect(main().get_by_text("Fine-tuned accuracy")).to_be_visible()
    expect(main().get_by_text("Fine-tuned macro recall")).to_be_visible()
    expect(main().get_by_test_id("stMetric")).to_have_count(3)  # accuracy, macro recall, macro F1
    expect(main().get_by_text(re.compile(r"^Frozen baseline: \d+\.\d%$"))).to_have_count(3)
    charts = main().get_by_test_id("stPlotlyChart")
    expect(charts).to_have_count(4)  # recall per class, two confusion matrices, weight change per group
    for i in range(3):
        expect(charts.nth(i).locator(".main-svg").first).to_be_visible()
    # Heatmap titles and the cell counts are drawn as SVG text.
    expect(charts.nth(1).get_by_text("Frozen baseline")).to_be_visible()
    expect(charts.nth(2).get_by_text("Fine-tuned")).to_be_visible()
    expect(charts.nth(1).locator(".heatmaplayer")).to_have_count(1)
    expect(charts.nth(2).locator(".heatmaplayer")).to_have_count(1)
    no_exception()
    shot("09_compare", height=2600)
    times["compare"] = time.monotonic() - t0
    print("seconds from start:", {k: round(v, 1) for k, v in times.items()})
