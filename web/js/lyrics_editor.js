// Lyrics editor on the pack's `lyrics` text boxes (Text Encode, and any later ACE-Step node with one):
// section tags highlighted, tag completion, linter and duration estimate.
//
// The frontend's own multiline widget stays in charge of the value (saving, loading, the prompt); this
// extension only dresses its <textarea>: a backdrop behind the transparent textarea repeats the text with
// tags and problems marked, a menu completes `[Cho` to `[Chorus]`, and a panel under it lists the linter's
// findings and the time the lyrics need at the node's bpm (see lyrics_lint.js for the rules).

import { app } from "../../../scripts/app.js";
import { addStyle, el, onNodeRemoved, onWidgetChange } from "./dom.js";
import { formatSeconds, lintLyrics, parseLines, tagCompletions } from "./lyrics_lint.js";

const NODE_PREFIX = "AceStep";
const LYRICS_WIDGET = "lyrics";
const WATCHED_WIDGETS = ["bpm", "timesignature", "duration"];
const SOFT_ISSUES = new Set(["long-line", "too-long"]);
const POLL_MS = 500;
const MIN_HEIGHT = 170;

const CSS = `
.acestep-lyrics { display: flex; flex-direction: column; width: 100%; height: 100%; gap: 2px;
  --comfy-widget-min-height: ${MIN_HEIGHT}; }
.acestep-lyrics-box { position: relative; flex: 1 1 auto; min-height: 60px; overflow: hidden;
  background-color: var(--comfy-input-bg); border-radius: 4px; }
.acestep-lyrics-box > textarea.comfy-multiline-input, .acestep-lyrics-backdrop {
  position: absolute; top: 0; left: 0; margin: 0; box-sizing: border-box; padding: 2px 4px; border: 0;
  font-family: monospace; font-size: var(--comfy-textarea-font-size, 10px); line-height: 1.35; letter-spacing: 0;
  white-space: pre-wrap; overflow-wrap: break-word; word-break: normal; tab-size: 4; }
.acestep-lyrics-box > textarea.comfy-multiline-input { width: 100%; height: 100%; background: transparent;
  z-index: 1; }
.acestep-lyrics-backdrop { height: 100%; overflow: hidden; color: transparent; pointer-events: none; z-index: 0; }
.acestep-lyrics-backdrop .tag { background: rgba(80, 160, 255, 0.35); border-radius: 2px; }
.acestep-lyrics-backdrop .bad { background: rgba(255, 70, 70, 0.55); text-decoration: underline wavy rgb(255, 90, 90); }
.acestep-lyrics-backdrop .soft { text-decoration: underline wavy rgb(255, 170, 60); }
.acestep-lyrics-menu { position: absolute; z-index: 2; margin: 0; padding: 2px 0; list-style: none; min-width: 110px;
  max-height: 50%; overflow-y: auto; background: var(--comfy-menu-bg, #353535); color: var(--fg-color, #ddd);
  border: 1px solid var(--border-color, #555); border-radius: 4px; font: 11px sans-serif; }
.acestep-lyrics-menu li { padding: 2px 8px; cursor: pointer; white-space: nowrap; }
.acestep-lyrics-menu li.active { background: rgba(80, 160, 255, 0.45); }
.acestep-lyrics-lint { flex: 0 0 auto; max-height: 5.6em; overflow-y: auto; font: 10px sans-serif;
  color: var(--input-text, #ddd); background: var(--comfy-input-bg); border-radius: 4px; padding: 2px 4px; }
.acestep-lyrics-lint .summary { opacity: 0.9; }
.acestep-lyrics-lint ul { margin: 0; padding-left: 14px; }
.acestep-lyrics-lint li { cursor: pointer; }
.acestep-lyrics-lint li.warning { color: rgb(255, 130, 120); }
.acestep-lyrics-lint li.soft { color: rgb(255, 185, 90); }
`;

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * The backdrop's HTML: the text with tags and issue ranges in spans (the text itself is transparent, so only
 * the marks show through the textarea). `caret` (an offset) adds an empty marker span there.
 */
export function highlightHtml(text, issues, caret = -1) {
  const marks = new Uint8Array(text.length);
  for (const line of parseLines(text)) for (const tag of line.tags) marks.fill(1, tag.from, tag.to);
  for (const found of issues) if (found.to > found.from) marks.fill(SOFT_ISSUES.has(found.code) ? 4 : 2, found.from, found.to);
  const names = { 1: "tag", 2: "bad", 4: "soft" };
  let html = "";
  let start = 0;
  for (let i = 1; i <= text.length; i += 1) {
    if (i < text.length && marks[i] === marks[start] && i !== caret) continue;
    const piece = escapeHtml(text.slice(start, i));
    html += marks[start] ? `<span class="${names[marks[start]]}">${piece}</span>` : piece;
    if (i === caret) html += '<span class="caret"></span>';
    start = i;
  }
  if (caret === 0) html = `<span class="caret"></span>${html}`;
  return `${html}\n `;
}

/** The unfinished tag just before the caret (`[Cho|` → "Cho"), or null when the caret is not in one. */
export function openTagBefore(text, caret) {
  const lineStart = text.lastIndexOf("\n", caret - 1) + 1;
  const match = text.slice(lineStart, caret).match(/\[([^\[\]\n]*)$/);
  return match ? match[1] : null;
}

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

/** Seconds the song will have: the node's duration widget, else a connected Empty Latent's seconds. */
function songSeconds(node) {
  const stated = Number(widgetValue(node, "duration")) || 0;
  if (stated > 0) return stated;
  const slot = node.inputs?.findIndex((input) => input.name === "latent") ?? -1;
  const source = slot >= 0 ? node.getInputNode?.(slot) : null;
  return Number(source ? widgetValue(source, "seconds") : 0) || 0;
}

class LyricsEditor {
  constructor(node, widget, textarea) {
    this.node = node;
    this.widget = widget;
    this.textarea = textarea;
    this.backdrop = el("div", "acestep-lyrics-backdrop");
    this.menu = el("ul", "acestep-lyrics-menu");
    this.menu.style.display = "none";
    this.panel = el("div", "acestep-lyrics-lint");
    this.box = el("div", "acestep-lyrics-box", {}, [this.backdrop, textarea, this.menu]);
    this.root = el("div", "acestep-lyrics", {}, [this.box, this.panel]);
    this.choices = [];
    this.active = 0;
    this.lastKey = "";
    this.result = { issues: [], estimate: null };
    textarea.addEventListener("input", () => { this.refresh(); this.updateMenu(); });
    textarea.addEventListener("scroll", () => { this.backdrop.scrollTop = textarea.scrollTop; });
    textarea.addEventListener("keydown", (event) => this.onKey(event), true);
    textarea.addEventListener("click", () => this.updateMenu());
    textarea.addEventListener("blur", () => this.hideMenu());
    this.menu.addEventListener("mousedown", (event) => this.onMenuMouse(event));
    this.panel.addEventListener("click", (event) => this.onPanelClick(event));
    new ResizeObserver(() => this.fitBackdrop()).observe(textarea);
    onWidgetChange(widget, () => this.refresh());
    for (const name of WATCHED_WIDGETS) {
      const watched = node.widgets?.find((w) => w.name === name);
      if (watched) onWidgetChange(watched, () => this.refresh());
    }
    this.timer = setInterval(() => this.refresh(), POLL_MS);
    onNodeRemoved(node, () => clearInterval(this.timer));
    this.refresh();
  }

  options() {
    const bpm = Number(widgetValue(this.node, "bpm")) || 0;
    const beatsPerBar = Number(widgetValue(this.node, "timesignature")) || 0;
    return { bpm, beatsPerBar, duration: songSeconds(this.node) };
  }

  /** Re-lint and redraw when the text or the settings changed since the last time. */
  refresh(force = false) {
    const text = this.textarea.value;
    const options = this.options();
    const key = JSON.stringify([text, options]);
    if (!force && key === this.lastKey) return;
    this.lastKey = key;
    this.result = lintLyrics(text, options);
    this.backdrop.innerHTML = highlightHtml(text, this.result.issues);
    this.fitBackdrop();
    this.renderPanel();
  }

  /** Keep the backdrop's wrapping width equal to the textarea's (which loses its scrollbar's width). */
  fitBackdrop() {
    this.backdrop.style.width = `${this.textarea.clientWidth}px`;
    this.backdrop.scrollTop = this.textarea.scrollTop;
  }

  renderPanel() {
    const { issues, estimate } = this.result;
    const summary = el("div", "summary");
    if (!estimate || estimate.sungLines === 0) {
      summary.textContent = this.textarea.value.trim() ? "no sung lines: instrumental" : "no lyrics: instrumental";
    } else {
      const bpm = estimate.bpmAssumed ? `${estimate.bpm} bpm (bpm is auto; set it for a better estimate)` : `${estimate.bpm} bpm`;
      summary.textContent = `needs ≈ ${formatSeconds(estimate.seconds)} (${estimate.bars} bars) at ${bpm}`;
    }
    summary.textContent += issues.length ? ` · ${issues.length} issue${issues.length > 1 ? "s" : ""}` : " · no issues";
    const list = el("ul", "", {}, issues.map((found) => {
      const item = el("li", SOFT_ISSUES.has(found.code) ? "soft" : "warning", { textContent: found.message });
      item.dataset.from = String(found.from);
      item.dataset.to = String(found.to);
      item.dataset.code = found.code;
      return item;
    }));
    this.panel.replaceChildren(summary, list);
    this.panel.dataset.issues = issues.map((found) => found.code).join(" ");
    this.panel.dataset.seconds = estimate ? String(estimate.seconds) : "0";
  }

  onPanelClick(event) {
    const item = event.target.closest("li");
    if (!item || item.dataset.to === item.dataset.from) return;
    this.textarea.focus();
    this.textarea.setSelectionRange(Number(item.dataset.from), Number(item.dataset.to));
  }

  updateMenu() {
    const { value, selectionStart, selectionEnd } = this.textarea;
    const partial = selectionStart === selectionEnd ? openTagBefore(value, selectionStart) : null;
    const choices = partial === null ? [] : tagCompletions(partial);
    if (!choices.length || (choices.length === 1 && choices[0].toLowerCase() === partial.toLowerCase())) {
      this.hideMenu();
      return;
    }
    this.choices = choices;
    this.partial = partial;
    this.active = 0;
    this.menu.replaceChildren(...choices.map((choice, i) => el("li", i === 0 ? "active" : "", { textContent: choice })));
    this.menu.style.display = "block";
    this.placeMenu(selectionStart);
  }

  /** Put the menu under the caret, found through a marker in a copy of the text in the backdrop. */
  placeMenu(caret) {
    this.backdrop.innerHTML = highlightHtml(this.textarea.value, this.result.issues, caret);
    const marker = this.backdrop.querySelector(".caret");
    const lineHeight = parseFloat(getComputedStyle(this.textarea).lineHeight) || 14;
    const top = (marker?.offsetTop ?? 0) - this.textarea.scrollTop + lineHeight;
    const left = Math.min(marker?.offsetLeft ?? 0, Math.max(0, this.box.clientWidth - 120));
    this.menu.style.top = `${top}px`;
    this.menu.style.left = `${left}px`;
  }

  hideMenu() {
    this.menu.style.display = "none";
    this.choices = [];
  }

  accept(choice) {
    const { value, selectionStart } = this.textarea;
    const from = selectionStart - this.partial.length;
    const closing = value[selectionStart] === "]" ? "" : "]";
    this.textarea.setRangeText(`${choice}${closing}`, from, selectionStart, "end");
    if (!closing) this.textarea.setSelectionRange(this.textarea.selectionStart + 1, this.textarea.selectionStart + 1);
    this.hideMenu();
    this.textarea.dispatchEvent(new Event("input", { bubbles: true }));
    this.hideMenu();
  }

  onKey(event) {
    if (!this.choices.length) return;
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves) {
      this.active = (this.active + moves[event.key] + this.choices.length) % this.choices.length;
      [...this.menu.children].forEach((item, i) => item.classList.toggle("active", i === this.active));
      this.menu.children[this.active]?.scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.accept(this.choices[this.active]);
    } else if (event.key === "Escape") {
      this.hideMenu();
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }

  onMenuMouse(event) {
    event.preventDefault();
    const index = [...this.menu.children].indexOf(event.target.closest("li"));
    if (index >= 0) this.accept(this.choices[index]);
  }
}

/** Dress the lyrics widget of a new Text Encode node (before the frontend mounts its element). */
function attachEditor(node) {
  const widget = node.widgets?.find((w) => w.name === LYRICS_WIDGET);
  const textarea = widget?.inputEl ?? widget?.element;
  if (!widget || widget.acestepEditor || !(textarea instanceof HTMLTextAreaElement)) return;
  const editor = new LyricsEditor(node, widget, textarea);
  widget.element = editor.root;
  widget.acestepEditor = editor;
}

app.registerExtension({
  name: "acestep.lyricsEditor",
  init() {
    addStyle("acestep-lyrics-style", CSS);
  },
  nodeCreated(node) {
    if (node.comfyClass?.startsWith(NODE_PREFIX)) attachEditor(node);
  },
});
