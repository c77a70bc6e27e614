"""Opens ComfyUI's page in headless Chromium, opens the headroom sidebar
panel and saves a screenshot: the check that the panel shows each node's
memory of the last prompt and the verdict (integrations/comfyui/VERIFIED.md).
Drives Chromium through its DevTools protocol with aiohttp (ComfyUI's own
dependency: run it with ComfyUI's Python).

    python screenshot.py --url http://127.0.0.1:8212 --out panel.png
"""

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

import aiohttp


async def cdp(ws, state, method, **params):
    state["id"] += 1
    mid = state["id"]
    await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
    while True:
        msg = json.loads((await ws.receive()).data)
        if msg.get("id") == mid:
            if "error" in msg:
                raise RuntimeError("%s: %s" % (method, msg["error"]))
            return msg.get("result", {})


async def evaluate(ws, state, expr):
    r = await cdp(ws, state, "Runtime.evaluate", expression=expr, awaitPromise=True,
                  returnByValue=True)
    if "exceptionDetails" in r:
        raise RuntimeError("page: %s" % r["exceptionDetails"])
    return r.get("result", {}).get("value")


async def shoot(url, out, port):
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get("http://127.0.0.1:%d/json/list" % port) as r:
                    pages = [p for p in await r.json() if p.get("type") == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        async with s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            st = {"id": 0}
            await cdp(ws, st, "Emulation.setDeviceMetricsOverride", width=1500, height=950,
                      deviceScaleFactor=1, mobile=False)
            await cdp(ws, st, "Page.navigate", url=url)
            for _ in range(300):  # the front end takes a while on a loaded machine
                await asyncio.sleep(0.5)
                ok = await evaluate(ws, st, "!!(window.app && window.app.extensionManager && "
                                            "window.app.extensionManager.sidebarTab)")
                if ok:
                    break
            tabs = await evaluate(ws, st, "app.extensionManager.getSidebarTabs()"
                                          ".map(t => t.id)")
            # The first visit's template dialog covers the page: close it.
            await asyncio.sleep(2)
            await evaluate(ws, st, "document.querySelectorAll('.p-dialog-close-button,"
                                   "[aria-label=Close]').forEach(b => b.click())")
            await evaluate(ws, st, "app.extensionManager.sidebarTab"
                                   ".toggleSidebarTab('headroom')")
            await asyncio.sleep(1)
            # A wider sidebar than the default, as a user would drag it.
            await evaluate(ws, st, "(() => { const p = document.querySelector("
                                   "'.headroom-panel')?.closest('.p-splitterpanel'); "
                                   "if (p) p.style.flexBasis = '34%'; })()")
            await asyncio.sleep(6)  # the panel's first refresh, then one more
            text = await evaluate(ws, st, "document.querySelector('.headroom-panel')"
                                          "?.innerText || ''")
            shot = await cdp(ws, st, "Page.captureScreenshot", format="png")
            with open(out, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            return tabs, text


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8212")
    ap.add_argument("--out", default="panel.png")
    ap.add_argument("--port", type=int, default=9333)
    a = ap.parse_args(argv)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("no chromium on PATH")
        return 2
    prof = tempfile.mkdtemp(prefix="hr-chromium-")
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu",
                             "--remote-debugging-port=%d" % a.port, "--user-data-dir=" + prof,
                             "about:blank"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        tabs, text = asyncio.run(shoot(a.url, a.out, a.port))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(prof, ignore_errors=True)
    print("chromium:", subprocess.run([exe, "--version"], capture_output=True,
                                      text=True).stdout.strip())
    print("sidebar tabs:", tabs)
    print("panel text:\n" + text)
    print("screenshot:", os.path.abspath(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
