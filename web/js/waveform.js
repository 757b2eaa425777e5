// Time and waveform arithmetic for the repaint region picker (pure functions, no DOM).
//
// ACE-Step latents have 25 frames per second, so a repaint range can only start and end on a 40 ms grid;
// snapping the picker to that grid shows users exactly what the model will regenerate.

export const LATENT_HZ = 25;
export const GRID_SECONDS = 1 / LATENT_HZ;
export const END_OF_SOURCE = -1;
export const EXTEND_MARGIN = 0.12;
export const EMPTY_VIEW_SECONDS = 30;

/** `seconds` on the 40 ms latent grid, with float noise removed (1.2400000001 → 1.24). */
export function snap(seconds) {
  return Number((Math.round(seconds * LATENT_HZ) / LATENT_HZ).toFixed(2));
}

/** Min and max of the channel mix in `buckets` equal slices of the samples (for drawing). */
export function computePeaks(channels, buckets) {
  const length = channels[0]?.length ?? 0;
  const min = new Float32Array(buckets);
  const max = new Float32Array(buckets);
  if (!length) return { min, max };
  const scale = 1 / channels.length;
  for (let b = 0; b < buckets; b += 1) {
    const from = Math.floor((b * length) / buckets);
    const to = Math.max(from + 1, Math.floor(((b + 1) * length) / buckets));
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = from; i < to && i < length; i += 1) {
      let value = 0;
      for (const channel of channels) value += channel[i];
      value *= scale;
      if (value < lo) lo = value;
      if (value > hi) hi = value;
    }
    min[b] = lo === Infinity ? 0 : lo;
    max[b] = hi === -Infinity ? 0 : hi;
  }
  return { min, max };
}

/** The region's end in seconds: -1 means the end of the source (null while its length is unknown). */
export function resolveEnd(end, duration) {
  return end === END_OF_SOURCE ? duration ?? null : end;
}

/**
 * The seconds the picker shows, [from, to]: the source with a margin on both sides where dragging extends
 * the song, widened to hold the current region; without a source, 30 s or the region.
 */
export function viewRange(duration, start, end) {
  if (duration) {
    const margin = Math.max(1, duration * EXTEND_MARGIN);
    return [Math.min(-margin, start), Math.max(duration + margin, end ?? duration)];
  }
  return [Math.min(0, start), Math.max(EMPTY_VIEW_SECONDS, (end ?? 0) + 5, start + 5)];
}

/** Which part of the region a pointer at `t` grabs: "start", "end", "inside" or "outside". */
export function hitTest(t, start, end, tolerance) {
  if (Math.abs(t - start) <= tolerance) return "start";
  if (end !== null && Math.abs(t - end) <= tolerance) return "end";
  if (end !== null && t > start && t < end) return "inside";
  return "outside";
}

function clamp(value, lo, hi) {
  return Math.min(hi, Math.max(lo, value));
}

/**
 * The region after dragging from `anchor` to `t` (seconds) in `mode` ("start", "end", "inside" = move,
 * "outside" = draw a new one), snapped to the grid and kept inside `view`, at least one frame long, with an
 * end above 0. `region` is where it was when the drag began.
 */
export function dragRegion(mode, anchor, t, region, view) {
  const [lo, hi] = view;
  const { start, end } = region;
  if (mode === "start") return { start: snap(clamp(t, lo, end - GRID_SECONDS)), end };
  if (mode === "end") return { start, end: snap(clamp(t, Math.max(start, 0) + GRID_SECONDS, hi)) };
  if (mode === "inside") {
    const length = end - start;
    const moved = snap(clamp(start + (t - anchor), lo, hi - length));
    return { start: moved, end: snap(moved + length) };
  }
  const a = snap(clamp(anchor, lo, hi));
  const b = snap(clamp(t, lo, hi));
  const from = Math.min(a, b);
  const to = Math.max(a, b, from + GRID_SECONDS, GRID_SECONDS);
  return { start: from, end: snap(to) };
}

/** A tick spacing (seconds) that keeps labels at least `minPixels` apart. */
export function tickStep(secondsPerPixel, minPixels = 60) {
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];
  return steps.find((step) => step / secondsPerPixel >= minPixels) ?? 600;
}
