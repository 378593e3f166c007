"""Screenshots of the MLflow UI: the runs a newcomer lands on, and ssl_finetune compared with supervised.

Not part of CI: it needs Chromium (`apt-get install -y chromium`). It runs a smoke scarcity sweep
into --out (unless one is there already), serves that MLflow store on 127.0.0.1 and, in headless
Chromium, as a user would:

1. opens the link launch.py prints at the end of a sweep, checks that it lands on the runs table
   (not MLflow 3's GenAI overview), filters the eval runs at --fraction, groups them by track and
   saves that page (--runs-png);
2. opens the compare-runs page of both tracks' eval runs at --fraction, arranges it over the
   DevTools protocol as a reader would (the plot on the test metric, params that differ) and saves
   the whole page (--png).

It stops the server and the browser by their pids:

    python scripts/mlflow_screenshot.py --out /tmp/ssrl-shot --fraction 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ssrl.tune.describe import ui_page

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' local MLflow server
import local_mlflow  # noqa: E402
from local_mlflow import free_port, stop  # noqa: E402

TRACKS = ("ssl_finetune", "supervised")
# The browser reaches the server as http://HOST:PORT (mapped to 127.0.0.1): the UI opens its chat
# assistant side panel on a first visit to localhost, which would cover a third of the shot.
HOST = "ssrl-mlflow"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "ssrl-mlflow-shot"),
                   help="launch.py --out of a scarcity sweep (run at smoke scale when it holds none)")
    p.add_argument("--fraction", default="0.25", help="the label fraction to compare at (tags.fraction)")
    p.add_argument("--png", default=str(REPO / "docs" / "img" / "mlflow-compare.png"))
    p.add_argument("--runs-png", default=str(REPO / "docs" / "img" / "mlflow-runs.png"))
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--window", default="1600,1000", help="browser window WIDTH,HEIGHT")
    p.add_argument("--wait", type=float, default=60, help="seconds the JS app may take to render")
    return p.parse_args(argv)


def ensure_sweep(out: Path) -> dict:
    """results.json of a finished scarcity sweep in `out`, running the smoke sweep first if needed."""
    results = out / "scarcity" / "results.json"
    if not results.exists():
        cmd = [sys.executable, str(REPO / "launch.py"), "--sweep", "scarcity", "--scale", "smoke", "--out", str(out)]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(results.read_text())


def compare_ids(uri: str, run_id: str, fraction: str) -> tuple[str, list[str]]:
    """Experiment id and the eval run names of both tracks at `fraction` (supervised first, by seed)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ssrl-scarcity")
    if exp is None:
        sys.exit(f"error: no ssrl-scarcity experiment in {uri}")
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.ssrl_run = '{run_id}' and tags.stage = 'eval' and tags.fraction = '{fraction}'"), max_results=100)
    runs = sorted((r for r in runs if r.data.tags.get("track") in TRACKS),
                  key=lambda r: (r.data.tags["track"] != "supervised", int(r.data.tags["seed"])))
    if {r.data.tags["track"] for r in runs} != set(TRACKS):
        sys.exit(f"error: no eval runs of both {TRACKS} at fraction {fraction} in run {run_id}")
    return exp.experiment_id, [r.info.run_name for r in runs]


def start_server(uri: str, port: int, log: Path) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1, reachable as HOST from the browser, once /health answers."""
    hosts = ",".join(f"{h}:{port}" for h in ("127.0.0.1", "localhost", HOST))
    proc = local_mlflow.start(uri, port, log, "--allowed-hosts", hosts, "--cors-allowed-origins", f"http://{HOST}:{port}")
    if not local_mlflow.wait_healthy(proc, port):
        stop(proc)
        sys.exit(f"error: mlflow server did not come up; see {log}")
    return proc


def runs_url(base: str, experiment_id: str, fraction: str) -> str:
    """The page launch.py's last line links to, with the search a reader types: eval runs at `fraction`."""
    search = {"searchFilter": f"tags.stage = 'eval' and tags.fraction = '{fraction}'"}
    return f"{ui_page(base, experiment_id)}&{urllib.parse.urlencode(search, quote_via=urllib.parse.quote)}"


# Run in the page once it has loaded: params and tags show only what differs between the runs,
# their tables are not cut at 500 px, and the artifacts and tags sections fold away.
_LAYOUT_JS = r"""
(() => {
  const switches = [...document.querySelectorAll('button[role=switch]')];  // params, metrics, tags
  if (switches.length >= 3) { switches[0].click(); switches[2].click(); }
  document.querySelectorAll('table.mlflow-compare-table').forEach(t => t.style.maxHeight = 'none');
  for (const h of document.querySelectorAll('[role=button][aria-expanded=true]'))
    if (['Artifacts', 'Tags'].includes(h.innerText.trim())) h.click();
  return switches.length;
})()
"""
# Remove every parallel-coordinates chip but the track; the metrics are typed in afterwards.
_CHIPS_JS = r"""
[...document.querySelectorAll('[class*=select-selection-item-remove]')]
  .filter(x => x.parentElement.innerText.trim() !== 'track').forEach(x => x.click())
"""
PLOT_METRICS = ("test_macro_auroc", "best_epoch")


class _Page:
    """The smallest Chrome DevTools Protocol client: one page, one call at a time."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"page script failed: {str(out['exceptionDetails'])[:300]}")
        return out["result"].get("value")

    async def key(self, name: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=name, code=name, windowsVirtualKeyCode=code)

    async def pick(self, select_index: int, text: str) -> None:
        """Open the n-th select box, type, take the match (what a user's clicks and keys would do)."""
        x, y = await self.js(f"(() => {{ const r = document.querySelectorAll('[class*=select-selector]')"
                             f"[{select_index}].getBoundingClientRect(); return [r.right - 30, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        await asyncio.sleep(0.5)
        await self.call("Input.insertText", text=text)
        await asyncio.sleep(0.7)
        await self.key("Enter", 13)
        await asyncio.sleep(0.3)
        await self.key("Escape", 27)


async def _shoot(port: int, url: str, names: list[str], pngs: tuple[Path, Path], width: int, height: int,
                 wait_s: float) -> None:
    """The runs page at `url` (pngs[0]), then, ticking the runs `names` and pressing Compare, the compare page."""
    import aiohttp  # an MLflow dependency

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
        ws_url = next(t["webSocketDebuggerUrl"] for t in json.load(r) if t["type"] == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        page = _Page(ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        await page.call("Page.navigate", url=url)
        await _arrange_runs(page, wait_s)
        pngs[0].write_bytes(base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"]))
        for name in names:
            await _click(page, f"(() => {{ const id = [...document.querySelectorAll('[role=row]')]"
                               f".find(r => r.innerText.includes({json.dumps(name)})).getAttribute('row-id');"
                               " return document.querySelector(`[row-id='${id}'] .ag-selection-checkbox`); })()")
        await _click(page, "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Compare')")
        await _arrange_compare(page, len(names), wait_s)
        # the comparison only: MLflow's Compare link drops the model-training view, so its sidebar
        # would show the GenAI menu (README: 'Model training' at the top brings it back)
        x, width = await page.js("(() => { const r = document.querySelector('main').getBoundingClientRect();"
                                 " return [r.x, r.width]; })()")
        clip = {"x": x, "y": 0, "width": width, "height": await page.js("window.innerHeight"), "scale": 1}
        shot = await page.call("Page.captureScreenshot", format="png", clip=clip)
        pngs[1].write_bytes(base64.b64decode(shot["data"]))


async def _until(page: _Page, expression: str, wait_s: float, what: str) -> None:
    deadline = time.monotonic() + wait_s
    while not await page.js(expression):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not render in {wait_s:.0f} s")
        await asyncio.sleep(0.5)


async def _click(page: _Page, expression: str) -> None:
    """A mouse click in the middle of the element `expression` finds (menus open on pointer events)."""
    x, y = await page.js(f"(() => {{ const r = ({expression}).getBoundingClientRect();"
                         " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        await page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    await asyncio.sleep(1)


async def _arrange_runs(page: _Page, wait_s: float) -> None:
    """The link launch.py prints lands on the runs table (not the GenAI overview); group it by track."""
    await _until(page, "document.body !== null && document.body.innerText.includes('matching runs')", wait_s,
                 "the runs table")
    text = await page.js("location.hash + '\\n' + document.body.innerText")
    if "/runs" not in text.splitlines()[0] or "Token Usage" in text:
        raise RuntimeError(f"the experiment link did not open the runs table: {text[:300]!r}")
    await _click(page, "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Group by')")
    await _click(page, "[...document.querySelectorAll('[role=menuitemcheckbox]')]"
                       ".find(e => e.innerText.trim() === 'track')")  # the first 'track' is the tag
    await page.key("Escape", 27)
    await _until(page, "document.body.innerText.includes('Group: supervised')", wait_s, "the runs grouped by track")
    await asyncio.sleep(2)


async def _arrange_compare(page: _Page, n_runs: int, wait_s: float) -> None:
    """The compare page of n_runs runs with the plot on the test metric and only the params that differ."""
    await _until(page, f"document.body.innerText.includes('Comparing {n_runs} Runs') && "
                       "document.body.innerText.includes('Run details')", wait_s, f"the compare page of {n_runs} runs")
    await asyncio.sleep(3)  # the plot and tables fill in after the run data arrives
    await page.js(_CHIPS_JS)
    for metric in PLOT_METRICS:
        await page.pick(1, metric)
    await page.js(_LAYOUT_JS)
    await asyncio.sleep(2)
    # the app scrolls inside <main>: make the viewport as tall as its content, then shoot
    full = await page.js("(() => { const m = document.querySelector('main');"
                         " return Math.ceil(m.scrollHeight + m.getBoundingClientRect().top + 16); })()")
    width = await page.js("window.innerWidth")
    await page.call("Emulation.setDeviceMetricsOverride", width=width, height=max(await page.js("window.innerHeight"),
                    int(full)), deviceScaleFactor=1, mobile=False)
    await asyncio.sleep(2)


def screenshot(chromium: str, url: str, names: list[str], pngs: tuple[Path, Path], window: str,
               wait_s: float) -> None:
    """Headless Chromium's rendering of the runs page and the compare page, reached as a reader would."""
    for png in pngs:
        png.parent.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in window.split(","))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ssrl-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--host-resolver-rules=MAP {HOST} 127.0.0.1", f"--user-data-dir={profile}",
               f"--remote-debugging-port={port}", f"--window-size={width},{height}", "about:blank"]
        browser = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:  # until the DevTools endpoint answers
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2).close()
                    break
                except OSError:
                    if browser.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"error: {chromium} did not start (apt-get install -y chromium)")
                    time.sleep(0.3)
            asyncio.run(_shoot(port, url, names, pngs, width, height, wait_s))
        finally:
            stop(browser)
    for png in pngs:
        if not png.exists() or png.stat().st_size < 10_000:
            sys.exit(f"error: {png} is missing or blank")


def main(argv: list[str] | None = None) -> int:
    """Sweep (if needed), serve, shoot, stop."""
    args = parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    results = ensure_sweep(out)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    exp_id, names = compare_ids(uri, results["run_id"], args.fraction)
    port = free_port()
    proc = start_server(uri, port, out / "mlflow-server.log")
    try:
        url = runs_url(f"http://{HOST}:{port}", exp_id, args.fraction)
        print(f"opening {url}, then comparing {', '.join(names)}", flush=True)
        screenshot(args.chromium, url, names, (Path(args.runs_png), Path(args.png)), args.window, args.wait)
    finally:
        stop(proc)
    print(f"saved {args.runs_png} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
