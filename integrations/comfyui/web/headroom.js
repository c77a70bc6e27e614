// headroom's ComfyUI front-end extension (plain JavaScript, no build step).
//
// Two parts:
// - node reports: every headroom node's report shows in a read-only text
//   widget on the node, from the node's "executed" message (output nodes) or
//   from the "headroom.report" message the pass-through nodes send;
// - a sidebar panel (app.extensionManager.registerSidebarTab, where the front
//   end has it) fed by GET /headroom/snapshot every few seconds while it is
//   open: loaded models with an unload button each, "unload all", this GPU's
//   and the host's memory, other processes on the GPU, the container's
//   limit, each node's memory in the last prompt with the per-node leak
//   verdict, and recent events. Unloads go to POST /headroom/unload, which the
//   server refuses (409, with the reason) while a prompt runs.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const REPORT = "headroom_report";

function fmt(n) {
  if (n === null || n === undefined || typeof n !== "number") return "n/a";
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [u, d] of units) if (Math.abs(n) >= d) return (n / d).toFixed(1) + " " + u;
  return n + " B";
}

function showReport(node, text) {
  let w = node.widgets?.find((x) => x.name === REPORT);
  if (!w) {
    const factory = window.comfyAPI?.widgets?.ComfyWidgets?.STRING;
    if (!factory) return;
    w = factory(node, REPORT, ["STRING", { multiline: true }], app).widget;
    if (w.inputEl) {
      w.inputEl.readOnly = true;
      w.inputEl.style.opacity = 0.85;
      w.inputEl.style.fontFamily = "monospace";
      w.inputEl.style.fontSize = "11px";
    }
    w.serialize = false;
  }
  w.value = text;
  node.setDirtyCanvas?.(true, true);
}

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(e.style, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const colour = pct >= 90 ? "#d9534f" : pct >= 75 ? "#f0ad4e" : "#5cb85c";
  return el("div", { style: { background: "#333", height: "8px", borderRadius: "4px",
                              margin: "2px 0 6px" } },
    el("div", { style: { width: pct.toFixed(1) + "%", height: "8px", borderRadius: "4px",
                         background: colour } }));
}

class Panel {
  constructor(root) {
    this.root = root;
    this.timer = null;
    this.message = "";
  }

  async unload(body) {
    try {
      const r = await api.fetchApi("/headroom/unload", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body) });
      const j = await r.json();
      this.message = r.ok ? j.text.split("\n").slice(0, 3).join("\n") : "refused: " + j.error;
    } catch (e) {
      this.message = "unload failed: " + e;
    }
    await this.refresh();
  }

  async refresh() {
    let s;
    try {
      const r = await api.fetchApi("/headroom/snapshot");
      s = await r.json();
    } catch (e) {
      this.root.replaceChildren(el("div", {}, "headroom: no snapshot (" + e + ")"));
      return;
    }
    this.render(s);
  }

  render(s) {
    const h = (t) => el("div", { style: { fontWeight: "bold", margin: "10px 0 4px" } }, t);
    const small = { fontSize: "11px", opacity: 0.8 };
    const out = [el("div", { style: { fontSize: "15px", fontWeight: "bold" } }, "headroom")];
    if (this.message) {
      out.push(el("pre", { style: { whiteSpace: "pre-wrap", fontSize: "11px",
                                    background: "#222", padding: "4px" } }, this.message));
    }
    const running = s.running_prompts || [];
    out.push(el("div", { style: small }, running.length ? "prompt running: " + running.join(", ")
                                                        : "idle"));

    out.push(h("Loaded models (" + (s.models || []).length + ")"));
    if (!s.comfy) out.push(el("div", { style: small }, s.comfy_note));
    for (const m of s.models || []) {
      out.push(el("div", { style: { display: "flex", justifyContent: "space-between",
                                    alignItems: "center", gap: "6px" } },
        el("div", {},
          el("div", {}, m.name + " (" + m.class + ")" + (m.auxiliary_of ? ", aux of "
                                                         + m.auxiliary_of : "")),
          el("div", { style: small }, fmt(m.total_bytes) + " total, " + fmt(m.loaded_bytes)
                                      + " on " + m.device + ", " + fmt(m.offloaded_bytes)
                                      + " offloaded" + (m.dynamic ? ", dynamic VRAM" : ""))),
        el("button", { onclick: () => this.unload({ index: m.index }),
                       title: "unload through ComfyUI's model management" }, "unload")));
    }
    if ((s.models || []).length) {
      out.push(el("button", { onclick: () => this.unload({ all: true }),
                              style: { marginTop: "4px" } }, "unload all"));
    }
    if (s.dynamic_vram && s.dynamic_vram.enabled) {
      out.push(el("div", { style: small }, "dynamic VRAM (comfy-aimdo): "
                                           + fmt(s.dynamic_vram.usage_bytes)));
    }

    out.push(h("GPU"));
    const gpu = s.gpu || {};
    if (!gpu.devices || !gpu.devices.length) {
      out.push(el("div", { style: small }, "no GPU seen: " + (gpu.message || s.machine_note
                                                               || "no reading")));
    }
    for (const d of gpu.devices || []) {
      const used = (d.total_bytes || 0) - (d.free_bytes || 0);
      out.push(el("div", {}, (d.name || "GPU " + d.index) + ": " + fmt(used) + " of "
                             + fmt(d.total_bytes)), bar(used, d.total_bytes));
    }
    const p = s.process || {};
    out.push(el("div", { style: small }, "this process: CUDA allocated "
                                         + fmt(p.cuda_allocated_bytes) + ", reserved "
                                         + fmt(p.cuda_reserved_bytes)
                                         + (p.cuda_allocated_bytes == null ? " ("
                                            + p.cuda_note + ")" : "")));
    const others = gpu.processes || [];
    if (others.length) {
      out.push(el("div", { style: { marginTop: "4px" } }, "processes on the GPU:"));
      for (const q of others) {
        out.push(el("div", { style: small }, q.pid + " " + (q.name || "") + ": "
                                             + fmt(q.used_bytes ?? q.gpu_bytes)));
      }
    }

    out.push(h("Host"));
    const host = s.host || {};
    out.push(el("div", {}, "RAM " + fmt(host.used_bytes) + " of " + fmt(host.total_bytes)),
             bar(host.used_bytes, host.total_bytes));
    out.push(el("div", { style: small }, "this process: RSS " + fmt(p.rss_bytes)));
    const cg = s.cgroup || {};
    if (typeof cg.limit_bytes === "number") {
      out.push(el("div", {}, "container: " + fmt(cg.usage_bytes) + " of "
                             + fmt(cg.limit_bytes) + " limit"),
               bar(cg.usage_bytes, cg.limit_bytes));
    } else if (cg.state) {
      out.push(el("div", { style: small }, "container (cgroup v" + cg.version + "): "
                                           + fmt(cg.usage_bytes) + " used, no limit"));
    }

    out.push(...this.nodes(s.nodes || {}, h, small));

    out.push(h("Events"));
    const ev = (s.events || []).slice(-10).reverse();
    if (!ev.length) out.push(el("div", { style: small }, "none yet"));
    for (const e of ev) {
      const t = new Date(e.time * 1000).toLocaleTimeString();
      out.push(el("div", { style: small }, t + " [" + e.kind + "] " + e.text));
    }
    this.root.replaceChildren(...out);
  }

  // Per-node memory of the last prompt and the per-node leak verdict.
  nodes(n, h, small) {
    const out = [h("Nodes of the last prompt")];
    if (!n.installed) {
      out.push(el("div", { style: small }, "not measured: " + (n.why || "no hook")));
      return out;
    }
    const p = n.last_prompt;
    if (!p) {
      out.push(el("div", { style: small }, "no prompt finished yet"));
    } else {
      const signed = (b) => (b > 0 ? "+" : b < 0 ? "-" : "") + fmt(Math.abs(b));
      const cell = { padding: "1px 4px", textAlign: "right", whiteSpace: "nowrap" };
      const opt = (b) => (b === null || b === undefined ? "n/a" : signed(b));
      const rows = p.nodes.map((x) => el("tr", {},
        el("td", { style: { padding: "1px 4px" } }, x.key + (x.cached ? " (cached)" : "")),
        el("td", { style: cell }, (x.seconds * 1000).toFixed(0) + " ms"),
        el("td", { style: cell }, signed(x.rss_change)),
        el("td", { style: cell }, opt(x.heap_change))));
      rows.push(el("tr", { style: { opacity: 0.7 } },
        el("td", { style: { padding: "1px 4px" } }, "(outside the nodes)"),
        el("td", {}, ""), el("td", { style: cell }, signed(p.outside_change)), el("td", {}, "")));
      out.push(el("div", { style: small }, "RSS " + fmt(p.rss0) + " -> " + fmt(p.rss1) + " in "
                                           + (p.t1 - p.t0).toFixed(2) + " s"));
      out.push(el("table", { style: { fontSize: "11px", borderCollapse: "collapse" } },
        el("tr", { style: { opacity: 0.7 } }, el("th", {}, "node"), el("th", {}, "time"),
           el("th", {}, "RSS change"), el("th", {}, "C heap change")), ...rows));
    }
    const leaks = (n.verdict || []).concat(n.unattributed || []);
    out.push(el("div", { style: { margin: "4px 0", fontSize: "12px",
                                  color: leaks.length ? "#d9534f" : "inherit" } },
                n.verdict_text || ""));
    if (n.heap && n.heap !== "ok") {
      out.push(el("div", { style: small }, "C heap not read (" + n.heap + "): nodes are "
                                           + "judged by RSS"));
    }
    return out;
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), 3000);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }
}

let panel = null;

app.registerExtension({
  name: "headroom.panel",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.category !== "headroom") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text?.length) showReport(this, message.text.join("\n"));
    };
  },

  async setup() {
    api.addEventListener("headroom.report", ({ detail }) => {
      const node = app.graph?.getNodeById?.(Number(detail.node)) ??
        app.graph?.getNodeById?.(detail.node);
      if (node) showReport(node, detail.text);
    });
    const mgr = app.extensionManager;
    if (!mgr?.registerSidebarTab) return; // an older front end: node reports only
    mgr.registerSidebarTab({
      id: "headroom",
      icon: "pi pi-chart-bar",
      title: "headroom",
      tooltip: "headroom: loaded models and memory",
      type: "custom",
      render: (root) => {
        root.classList.add("headroom-panel");
        root.style.padding = "8px";
        root.style.overflowY = "auto";
        panel?.stop();
        panel = new Panel(root);
        panel.start();
      },
      destroy: () => {
        panel?.stop();
        panel = null;
      },
    });
  },
});
