"""The README's tables of each node's inputs and outputs, written from the
node definitions: INPUT_TYPES (type, default, range, choices, tooltip),
RETURN_TYPES, RETURN_NAMES and OUTPUT_TOOLTIPS. In README.md each table sits
between `<!-- inputs KEY -->` and `<!-- end inputs -->`, KEY being the
node's key in NODE_CLASS_MAPPINGS.

    python integrations/comfyui/readme_tables.py           # says what differs, exit 1
    python integrations/comfyui/readme_tables.py --write   # rewrites the tables

(with the headroom package importable and libheadroom found: the Smart
Memory Manager's defaults and the mode tooltips are the library's option and
mode tables.) tests/python/test_comfyui.py keeps README.md equal to them.
"""

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
_BLOCK = re.compile(r"(<!-- inputs (\S+) -->\n)(.*?)(<!-- end inputs -->)", re.S)


def _num(v):
    return ("%g" % v) if isinstance(v, float) else str(v)


def _type(spec):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    default = opts.get("default")
    if isinstance(kind, list):
        text = ", ".join(kind)
        return text + (" (%s)" % default if default is not None else "")
    if str(kind) == "*":
        return "`*`"
    if kind in ("FLOAT", "INT"):
        text = kind
        if "min" in opts and "max" in opts:
            text += " %s–%s" % (_num(opts["min"]), _num(opts["max"]))
        return text + (" (%s)" % _num(default) if default is not None else "")
    if kind == "BOOLEAN":
        return "BOOLEAN" + (" (%s)" % str(default).lower() if default is not None else "")
    if kind == "STRING":
        return "STRING" + (" (`%s`)" % default if default is not None else "")
    return str(kind)


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def table(cls):
    """The markdown table of one node class."""
    it = cls.INPUT_TYPES()
    rows = ["| | name | type (default) | meaning |", "| --- | --- | --- | --- |"]
    for group in ("required", "optional"):
        for name, spec in it.get(group, {}).items():
            tip = (spec[1] if len(spec) > 1 else {}).get("tooltip", "")
            label = name + (" (optional)" if group == "optional" else "")
            rows.append("| in | %s | %s | %s |" % (label, _cell(_type(spec)), _cell(tip)))
    tips = getattr(cls, "OUTPUT_TOOLTIPS", ("",) * len(cls.RETURN_TYPES))
    for name, kind, tip in zip(cls.RETURN_NAMES, cls.RETURN_TYPES, tips):
        kind = "`*`" if str(kind) == "*" else kind
        rows.append("| out | %s | %s | %s |" % (name, kind, _cell(tip)))
    return "\n".join(rows) + "\n"


def render(text, mappings):
    """`text` with every table block rewritten from `mappings`; raises
    KeyError for a block naming no node."""
    return _BLOCK.sub(lambda m: m.group(1) + table(mappings[m.group(2)]) + m.group(4), text)


def blocks(text):
    """The node keys that have a table block in `text`, in order."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def load_pack():
    """Loads the pack from this folder as the package `headroom_comfyui`
    (as ComfyUI would, without ComfyUI) and returns it."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "headroom_comfyui", os.path.join(here, "__init__.py"), submodule_search_locations=[here])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["headroom_comfyui"] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv):
    mappings = load_pack().NODE_CLASS_MAPPINGS
    with open(README) as f:
        text = f.read()
    missing = [k for k in mappings if k not in blocks(text)]
    new = render(text, mappings)
    if "--write" in argv:
        with open(README, "w") as f:
            f.write(new)
        print("wrote %s" % README)
    elif new != text:
        print("%s: the tables differ from the node definitions; run with --write" % README)
        return 1
    if missing:
        print("%s: no table block for %s" % (README, ", ".join(missing)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
