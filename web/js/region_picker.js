// Waveform region picker on ACE-Step Repaint Mask (and any pack node with repaint_start/repaint_end widgets).
//
// Shows the source recording (found upstream: the Load Audio node that feeds Source Audio Encode, or a file
// the user opens here) and lets the user drag the range to regenerate. The node's repaint_start and
// repaint_end widgets stay the single source of truth: dragging writes them, editing them moves the region.
// Everything snaps to the 40 ms latent grid; the shaded margins past either end are "extend" territory.
// Gestures: drag to draw a new range, drag an edge to move it, shift-drag inside the range to slide it.

import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { addStyle, el, onNodeRemoved, onWidgetChange } from "./dom.js";
import {
  GRID_SECONDS, computePeaks, dragRegion, hitTest, resolveEnd, tickStep, viewRange,
} from "./waveform.js";

const NODE_PREFIX = "AceStep";
const START = "repaint_start";
const END = "repaint_end";
const LOADER_TYPES = ["AceStepLoadAudio", "LoadAudio"];
const FOLLOWED_TYPES = ["AUDIO", "LATENT"];
const PEAK_BUCKETS = 4000;
const DECODE_RATE = 16000;
const POLL_MS = 400;
const HANDLE_PIXELS = 7;
const HEIGHT = 150;
const MAX_UPSTREAM = 24;

const CSS = `
.acestep-region { display: flex; flex-direction: column; width: 100%; height: 100%; gap: 2px;
  --comfy-widget-min-height: ${HEIGHT}; font: 10px sans-serif; color: var(--input-text, #ddd); }
.acestep-region canvas { flex: 1 1 auto; min-height: 60px; width: 100%; border-radius: 4px; cursor: crosshair;
  touch-action: none; background: var(--comfy-input-bg, #222); }
.acestep-region-bar { display: flex; gap: 6px; align-items: center; flex: 0 0 auto; }
.acestep-region-bar .label { flex: 1 1 auto; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.acestep-region-bar button { font: 10px sans-serif; padding: 1px 6px; cursor: pointer;
  background: var(--comfy-input-bg, #222); color: inherit; border: 1px solid var(--border-color, #555);
  border-radius: 4px; }
`;

/** "sub/name.wav [input]" → {filename, subfolder, type}, the way the frontend names files in combos. */
export function parseFileValue(value) {
  const match = value.match(/^(.*?)(?: \[(input|output|temp)\])?$/);
  const path = match[1];
  const cut = path.lastIndexOf("/");
  return { filename: path.slice(cut + 1), subfolder: cut >= 0 ? path.slice(0, cut) : "", type: match[2] ?? "input" };
}

function fileUrl(value) {
  const { filename, subfolder, type } = parseFileValue(value);
  const query = new URLSearchParams({ filename, subfolder, type });
  return api.apiURL(`/view?${query}`);
}

/** The audio file that reaches `node` through AUDIO/LATENT links: {url, label} or null. */
export function findSourceAudio(node) {
  const queue = [node];
  const seen = new Set([node.id]);
  while (queue.length && seen.size < MAX_UPSTREAM) {
    const current = queue.shift();
    for (const [slot, input] of (current.inputs ?? []).entries()) {
      if (input.link == null || !FOLLOWED_TYPES.includes(input.type)) continue;
      const origin = current.getInputNode(slot);
      if (!origin || seen.has(origin.id)) continue;
      seen.add(origin.id);
      const file = origin.widgets?.find((w) => w.name === "audio");
      if (LOADER_TYPES.includes(origin.comfyClass) && typeof file?.value === "string" && file.value) {
        return { url: fileUrl(file.value), label: file.value };
      }
      queue.push(origin);
    }
  }
  return null;
}

async function decodePeaks(data) {
  const context = new OfflineAudioContext(1, 1, DECODE_RATE);
  const buffer = await context.decodeAudioData(data);
  const channels = Array.from({ length: buffer.numberOfChannels }, (_, i) => buffer.getChannelData(i));
  const peaks = computePeaks(channels, PEAK_BUCKETS);
  const peak = Math.max(1e-4, ...peaks.max, ...peaks.min.map(Math.abs));
  return { duration: buffer.duration, peaks, peak };
}

class RegionPicker {
  constructor(node) {
    this.node = node;
    this.startWidget = node.widgets.find((w) => w.name === START);
    this.endWidget = node.widgets.find((w) => w.name === END);
    this.canvas = el("canvas", "", { title: "drag: new range · drag an edge: resize · shift-drag: slide" });
    this.label = el("span", "label");
    this.fileInput = el("input", "", { type: "file", accept: "audio/*" });
    this.fileInput.style.display = "none";
    const open = el("button", "", { textContent: "Open file…", title: "Show a local recording (only in this view)" });
    this.root = el("div", "acestep-region", {}, [
      this.canvas, el("div", "acestep-region-bar", {}, [this.label, open, this.fileInput]),
    ]);
    this.audio = null;
    this.sourceKey = null;
    this.localFile = null;
    this.message = "Connect Load Audio → Source Audio Encode → this node, or open a file.";
    this.drag = null;
    this.view = [0, 30];
    this.drawnKey = "";
    open.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => this.openFile(this.fileInput.files?.[0]));
    for (const type of ["pointerdown", "pointermove", "pointerup", "pointercancel"]) {
      this.canvas.addEventListener(type, (event) => this.onPointer(event));
    }
    this.canvas.addEventListener("dragover", (event) => event.preventDefault());
    this.canvas.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation();
      this.openFile(event.dataTransfer?.files?.[0]);
    });
    for (const widget of [this.startWidget, this.endWidget]) onWidgetChange(widget, () => this.draw());
    new ResizeObserver(() => this.draw(true)).observe(this.canvas);
    this.loading = false;
    this.ticked = false;
    const connectionsChanged = node.onConnectionsChange;
    node.onConnectionsChange = (...args) => {
      const result = connectionsChanged?.apply(node, args);
      queueMicrotask(() => this.tick());
      return result;
    };
    this.timer = setInterval(() => this.tick(), POLL_MS);
    onNodeRemoved(node, () => clearInterval(this.timer));
  }

  /** The region as the widgets say: {start, end} in seconds, end resolved (null while unknown). */
  region() {
    const start = Number(this.startWidget.value) || 0;
    return { start, end: resolveEnd(Number(this.endWidget.value), this.audio?.duration) };
  }

  tick() {
    const source = findSourceAudio(this.node);
    const key = source?.url ?? null;
    if (key !== this.sourceKey) {
      this.sourceKey = key;
      if (source) this.load(source.url, source.label);
      else if (!this.localFile) this.setAudio(null, "Connect Load Audio → Source Audio Encode → this node, or open a file.");
    }
    this.ticked = true;
    this.draw();
  }

  async load(url, label) {
    this.localFile = null;
    this.message = `loading ${label}…`;
    this.loading = true;
    this.draw(true);
    try {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const decoded = await decodePeaks(await response.arrayBuffer());
      if (this.sourceKey === url) this.setAudio({ ...decoded, label }, "");
    } catch (error) {
      if (this.sourceKey === url) this.setAudio(null, `could not read ${label}: ${error.message ?? error}`);
    } finally {
      if (this.sourceKey === url) this.loading = false;
    }
  }

  async openFile(file) {
    if (!file) return;
    this.localFile = file.name;
    this.message = `loading ${file.name}…`;
    this.draw(true);
    try {
      const decoded = await decodePeaks(await file.arrayBuffer());
      if (this.localFile === file.name) this.setAudio({ ...decoded, label: `${file.name} (local)` }, "");
    } catch (error) {
      this.setAudio(null, `could not read ${file.name}: ${error.message ?? error}`);
    }
  }

  setAudio(audio, message) {
    this.audio = audio;
    this.message = message;
    this.draw(true);
  }

  secondsAt(clientX) {
    const rect = this.canvas.getBoundingClientRect();
    const [lo, hi] = this.view;
    return lo + ((clientX - rect.left) / Math.max(1, rect.width)) * (hi - lo);
  }

  /** Client x of `seconds` (for tests and for placing things on the page). */
  clientX(seconds) {
    const rect = this.canvas.getBoundingClientRect();
    const [lo, hi] = this.view;
    return rect.left + ((seconds - lo) / (hi - lo)) * rect.width;
  }

  onPointer(event) {
    event.stopPropagation();
    const t = this.secondsAt(event.clientX);
    const rect = this.canvas.getBoundingClientRect();
    const tolerance = (HANDLE_PIXELS * (this.view[1] - this.view[0])) / Math.max(1, rect.width);
    if (event.type === "pointerdown" && event.button === 0) {
      event.preventDefault();
      const region = this.region();
      const end = region.end ?? this.view[1];
      const grabbed = hitTest(t, region.start, end, tolerance);
      const mode = grabbed === "inside" && !event.shiftKey ? "outside" : grabbed;
      this.drag = { mode, anchor: t, region: { start: region.start, end } };
      this.canvas.setPointerCapture(event.pointerId);
    } else if (event.type === "pointermove" && this.drag) {
      this.apply(dragRegion(this.drag.mode, this.drag.anchor, t, this.drag.region, this.view), false);
    } else if ((event.type === "pointerup" || event.type === "pointercancel") && this.drag) {
      if (event.type === "pointerup") this.apply(dragRegion(this.drag.mode, this.drag.anchor, t, this.drag.region, this.view), true);
      this.drag = null;
    } else if (event.type === "pointermove") {
      const region = this.region();
      const grabbed = hitTest(t, region.start, region.end, tolerance);
      const cursors = { start: "ew-resize", end: "ew-resize", inside: event.shiftKey ? "grab" : "crosshair" };
      this.canvas.style.cursor = cursors[grabbed] ?? "crosshair";
    }
  }

  /** Write the dragged region into the widgets (only the ends the drag moved); `done` ends the gesture. */
  apply(next, done) {
    const writes = [];
    if (this.drag.mode !== "end") writes.push([this.startWidget, next.start]);
    if (this.drag.mode !== "start") writes.push([this.endWidget, next.end]);
    for (const [widget, value] of writes) {
      widget.value = value;
      if (done) widget.callback?.(widget.value, app.canvas, this.node);
    }
    this.node.setDirtyCanvas(true, true);
    this.draw();
  }

  draw(force = false) {
    const { start, end } = this.region();
    if (!this.drag) this.view = viewRange(this.audio?.duration, start, end);
    const width = Math.round(this.canvas.clientWidth * devicePixelRatio);
    const height = Math.round(this.canvas.clientHeight * devicePixelRatio);
    const key = JSON.stringify([start, end, this.view, width, height, this.message, this.audio?.label]);
    if (!force && key === this.drawnKey) return;
    this.drawnKey = key;
    this.drawn = { start, end, view: [...this.view] };
    this.root.dataset.start = String(start);
    this.root.dataset.end = String(end);
    this.root.dataset.duration = String(this.audio?.duration ?? "");
    this.updateLabel(start, end);
    if (!width || !height) return;
    if (this.canvas.width !== width) this.canvas.width = width;
    if (this.canvas.height !== height) this.canvas.height = height;
    this.paint(this.canvas.getContext("2d"), width, height, start, end);
  }

  updateLabel(start, end) {
    const span = end === null ? "end of source" : `${end.toFixed(2)} s (${(end - start).toFixed(2)} s)`;
    const source = this.audio ? ` · ${this.audio.label}, ${this.audio.duration.toFixed(2)} s` : "";
    this.label.textContent = `repaint ${start.toFixed(2)} s → ${span} · 40 ms grid${source}`;
    this.label.title = this.label.textContent;
  }

  paint(ctx, width, height, start, end) {
    const [lo, hi] = this.view;
    const x = (seconds) => ((seconds - lo) / (hi - lo)) * width;
    const style = getComputedStyle(this.root);
    const fg = style.color || "#ddd";
    ctx.clearRect(0, 0, width, height);
    const duration = this.audio?.duration;
    if (duration) {
      ctx.fillStyle = "rgba(255, 255, 255, 0.06)";
      ctx.fillRect(0, 0, x(0), height);
      ctx.fillRect(x(duration), 0, width - x(duration), height);
      this.paintPeaks(ctx, x, height, duration);
    }
    this.paintTicks(ctx, x, width, height, fg);
    const right = end ?? hi;
    ctx.fillStyle = "rgba(80, 160, 255, 0.28)";
    ctx.fillRect(x(start), 0, x(right) - x(start), height);
    ctx.fillStyle = "rgb(80, 160, 255)";
    const handle = Math.max(2, Math.round(2 * devicePixelRatio));
    ctx.fillRect(x(start) - handle / 2, 0, handle, height);
    if (end !== null) ctx.fillRect(x(end) - handle / 2, 0, handle, height);
    ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
    ctx.fillStyle = fg;
    if (duration) {
      ctx.textAlign = "center";
      if (x(0) > 40 * devicePixelRatio) ctx.fillText("extend", x(0) / 2, height - 6 * devicePixelRatio);
      if (width - x(duration) > 40 * devicePixelRatio) ctx.fillText("extend", (x(duration) + width) / 2, height - 6 * devicePixelRatio);
    }
    if (this.message) {
      ctx.textAlign = "center";
      ctx.fillText(this.message, width / 2, height / 2);
    }
  }

  paintPeaks(ctx, x, height, duration) {
    const { min, max } = this.audio.peaks;
    const gain = 0.95 / this.audio.peak;
    const from = Math.max(0, Math.floor(x(0)));
    const to = Math.min(Math.ceil(x(duration)), this.canvas.width);
    const mid = height / 2;
    ctx.fillStyle = "rgba(170, 190, 210, 0.85)";
    for (let px = from; px < to; px += 1) {
      const b0 = Math.floor(((px - x(0)) / (x(duration) - x(0))) * min.length);
      const b1 = Math.max(b0 + 1, Math.floor(((px + 1 - x(0)) / (x(duration) - x(0))) * min.length));
      let lo = 0;
      let hi = 0;
      for (let b = Math.max(0, b0); b < Math.min(b1, min.length); b += 1) {
        lo = Math.min(lo, min[b]);
        hi = Math.max(hi, max[b]);
      }
      ctx.fillRect(px, mid - hi * mid * gain, 1, Math.max(1, (hi - lo) * mid * gain));
    }
  }

  paintTicks(ctx, x, width, height, fg) {
    const [lo, hi] = this.view;
    const step = tickStep((hi - lo) / (width / devicePixelRatio));
    ctx.fillStyle = fg;
    ctx.globalAlpha = 0.55;
    ctx.font = `${Math.round(9 * devicePixelRatio)}px sans-serif`;
    ctx.textAlign = "left";
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
      ctx.fillRect(Math.round(x(t)), 0, 1, 5 * devicePixelRatio);
      ctx.fillText(`${Number(t.toFixed(1))}s`, x(t) + 2 * devicePixelRatio, 12 * devicePixelRatio);
    }
    ctx.globalAlpha = 1;
  }
}

/** Snap typed values to the latent grid too: the number widgets step and round by one frame (40 ms). */
function gridOptions(spec) {
  if (Array.isArray(spec) && spec[1]) Object.assign(spec[1], { step: GRID_SECONDS, round: GRID_SECONDS });
}

function attachPicker(node) {
  if (!node.widgets?.some((w) => w.name === START) || !node.widgets.some((w) => w.name === END)) return;
  const picker = new RegionPicker(node);
  const widget = node.addDOMWidget("region", "acestep_region", picker.root, {
    serialize: false, hideOnZoom: false, getValue: () => "", setValue: () => {},
    getMinHeight: () => HEIGHT, getMaxHeight: () => HEIGHT * 2,
  });
  widget.serialize = false;
  node.acestepRegion = picker;
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size?.[0] ?? 0, width, 440), Math.max(node.size?.[1] ?? 0, height)]);
}

app.registerExtension({
  name: "acestep.regionPicker",
  init() {
    addStyle("acestep-region-style", CSS);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const inputs = { ...nodeData?.input?.required, ...nodeData?.input?.optional };
    if (!nodeData?.name?.startsWith(NODE_PREFIX) || !inputs[START] || !inputs[END]) return;
    gridOptions(inputs[START]);
    gridOptions(inputs[END]);
  },
  nodeCreated(node) {
    if (node.comfyClass?.startsWith(NODE_PREFIX)) attachPicker(node);
  },
});
