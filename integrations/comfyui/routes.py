"""The pack's HTTP routes, registered on ComfyUI's own server
(server.PromptServer.instance.routes) when the pack is loaded by ComfyUI:

GET  /headroom/models    the loaded models (headroom.comfy.loaded_models) and
                         comfy-aimdo's state, as JSON
GET  /headroom/snapshot  the panel's view (headroom.comfy.panel_state)
POST /headroom/unload    {"index": n} unloads one model, {"all": true} every
                         one; 409 with the reason while a prompt runs, 400 on
                         bad input, 200 with the report

Unloads run in a worker thread under one lock, so two clicks never unload
under each other and the event loop keeps serving.
"""

import asyncio
import sys
import threading

from headroom import comfy as _comfy

_lock = threading.Lock()
registered = False


def _unload(body):
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object: {"index": n} or {"all": true}')
    with _lock:
        if body.get("all") is True:
            return _comfy.free("all")
        if "index" in body:
            return _comfy.unload_index(body["index"])
    raise ValueError('the body must be {"index": n} or {"all": true}; got %r' % (body,))


def register():
    """Adds the routes to ComfyUI's server; False when there is none (a
    script, or a server without a route table)."""
    global registered
    srv = sys.modules.get("server")
    inst = getattr(getattr(srv, "PromptServer", None), "instance", None)
    if inst is None or getattr(inst, "routes", None) is None or registered:
        return registered
    from aiohttp import web

    routes = inst.routes

    @routes.get("/headroom/models")
    async def headroom_models(request):
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, lambda: {
            "models": _comfy.loaded_models(), "dynamic_vram": _comfy.dynamic_vram(),
            "running_prompts": _comfy.running_prompts()})
        return web.json_response(data)

    @routes.get("/headroom/snapshot")
    async def headroom_snapshot(request):
        data = await asyncio.get_running_loop().run_in_executor(None, _comfy.panel_state)
        return web.json_response(data)

    @routes.post("/headroom/unload")
    async def headroom_unload(request):
        try:
            body = await request.json()
        except Exception:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        try:
            res = await asyncio.get_running_loop().run_in_executor(None, _unload, body)
        except _comfy.PromptRunning as e:
            _comfy.record("refused", str(e))
            return web.json_response({"error": str(e)}, status=409)
        except (ValueError, _comfy.NotAPatcher) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"result": res.as_dict(), "text": str(res)})

    registered = True
    return True
