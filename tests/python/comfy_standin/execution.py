"""A stand-in for ComfyUI's execution module (NOT ComfyUI): the two entry
points headroom.comfy.pernode hooks, with ComfyUI's names and calling
convention. PromptExecutor.execute runs a prompt (asyncio.run of
execute_async, as ComfyUI 0.3.64 does); execute_async calls the module
global execute(server, dynprompt, caches, current_item, extra_data,
executed, prompt_id, execution_list, pending_subgraph_results,
pending_async_nodes) for each node in order, looked up at call time as in
ComfyUI, so a wrapper put in its place runs. A node whose output is cached
(same class and inputs as in the last prompt, and no IS_CHANGED) is not
run. load(sync=False) gives a fresh module; sync=True the older form whose
execute is a plain function.
"""

import asyncio
import enum


class ExecutionResult(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


NODE_CLASS_MAPPINGS = {}


class DynamicPrompt:
    def __init__(self, prompt):
        self.prompt = prompt

    def get_node(self, node_id):
        return self.prompt[node_id]

    def get_display_node_id(self, node_id):
        return node_id


class _Outputs:
    def __init__(self):
        self.data = {}

    def get(self, node_id):
        return self.data.get(node_id)

    def set(self, node_id, value):
        self.data[node_id] = value


class CacheSet:
    def __init__(self):
        self.outputs = _Outputs()
        self.keys = {}


def _inputs(dynprompt, caches, node):
    out = {}
    for k, v in node["inputs"].items():
        out[k] = caches.outputs.get(v[0])[v[1]] if isinstance(v, list) else v
    return out


def _set_prompt(caches, prompt):
    """As ComfyUI's cache.set_prompt: an output stays cached only for a node
    of the same class and inputs and without IS_CHANGED (whose NaN never
    matches); the others are dropped before the prompt runs."""
    for node_id in list(caches.outputs.data):
        node = prompt.get(node_id)
        key = None if node is None else (node["class_type"], repr(node["inputs"]))
        if (key is None or caches.keys.get(node_id) != key
                or hasattr(NODE_CLASS_MAPPINGS[node["class_type"]], "IS_CHANGED")):
            del caches.outputs.data[node_id]


def _run(server, dynprompt, caches, current_item, prompt_id):
    node = dynprompt.get_node(current_item)
    cls = NODE_CLASS_MAPPINGS[node["class_type"]]
    if caches.outputs.get(current_item) is not None:
        return ExecutionResult.SUCCESS, None, None
    try:
        out = getattr(cls(), cls.FUNCTION)(**_inputs(dynprompt, caches, node))
    except Exception as e:
        return ExecutionResult.FAILURE, {"node_id": current_item}, e
    caches.outputs.set(current_item, out)
    caches.keys[current_item] = (node["class_type"], repr(node["inputs"]))
    return ExecutionResult.SUCCESS, None, None


async def execute(server, dynprompt, caches, current_item, extra_data, executed, prompt_id,
                  execution_list, pending_subgraph_results, pending_async_nodes):
    return _run(server, dynprompt, caches, current_item, prompt_id)


def execute_sync(server, dynprompt, caches, current_item, extra_data, executed, prompt_id,
                 execution_list, pending_subgraph_results):
    return _run(server, dynprompt, caches, current_item, prompt_id)


class PromptExecutor:
    sync = False

    def __init__(self, server=None):
        self.server = server
        self.caches = CacheSet()
        self.success = True

    def execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):
        if self.sync:
            return self._execute_sync(prompt, prompt_id)
        asyncio.run(self.execute_async(prompt, prompt_id, extra_data, execute_outputs))

    async def execute_async(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):
        dp = DynamicPrompt(prompt)
        self.success = True
        _set_prompt(self.caches, prompt)
        for node_id in prompt:
            res, _, ex = await execute(self.server, dp, self.caches, node_id, extra_data, set(),
                                       prompt_id, None, {}, {})
            if res == ExecutionResult.FAILURE:
                self.success = False
                self.error = ex
                break

    def _execute_sync(self, prompt, prompt_id):
        dp = DynamicPrompt(prompt)
        self.success = True
        _set_prompt(self.caches, prompt)
        for node_id in prompt:
            res, _, ex = execute(self.server, dp, self.caches, node_id, {}, set(), prompt_id,
                                 None, {})
            if res == ExecutionResult.FAILURE:
                self.success = False
                self.error = ex
                break
