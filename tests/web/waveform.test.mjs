// Unit tests of web/js/waveform.js (the region picker's arithmetic) under Node's test runner.

import assert from "node:assert/strict";
import test from "node:test";

import {
  GRID_SECONDS, computePeaks, dragRegion, hitTest, resolveEnd, snap, tickStep, viewRange,
} from "../../web/js/waveform.js";

test("snap puts seconds on the 40 ms latent grid without float noise", () => {
  assert.equal(GRID_SECONDS, 0.04);
  assert.equal(snap(1.01), 1.0);
  assert.equal(snap(1.03), 1.04);
  assert.equal(snap(1.2400000001), 1.24);
  assert.equal(snap(-0.51), -0.52);
  for (const t of [0.123, 3.3333, 7.77, 59.99]) {
    const frames = snap(t) * 25;
    assert.ok(Math.abs(frames - Math.round(frames)) < 1e-9, `${t} → ${snap(t)}`);
  }
});

test("peaks hold the min and max of the channel mix per bucket", () => {
  const left = Float32Array.from([0, 1, -1, 0.5, 0, 0, 0, 0]);
  const right = Float32Array.from([0, 1, -1, -0.5, 0, 0, 0.2, 0]);
  const { min, max } = computePeaks([left, right], 2);
  assert.deepEqual([...max].map((v) => Number(v.toFixed(3))), [1, 0.1]);
  assert.deepEqual([...min].map((v) => Number(v.toFixed(3))), [-1, 0]);
  assert.deepEqual([...computePeaks([new Float32Array(0)], 3).max], [0, 0, 0]);
});

test("end -1 means the end of the source", () => {
  assert.equal(resolveEnd(-1, 6), 6);
  assert.equal(resolveEnd(-1, undefined), null);
  assert.equal(resolveEnd(4.2, 6), 4.2);
});

test("the view shows extend margins around the source and always holds the region", () => {
  assert.deepEqual(viewRange(10, 0, 10), [-1.2, 11.2]);
  assert.deepEqual(viewRange(4, 0, 4), [-1, 5]);
  assert.deepEqual(viewRange(10, -5, 20), [-5, 20]);
  assert.deepEqual(viewRange(undefined, 0, null), [0, 30]);
  assert.deepEqual(viewRange(undefined, 2, 40), [0, 45]);
});

test("hit test finds the edges within the tolerance, then the inside", () => {
  assert.equal(hitTest(1.05, 1, 3, 0.1), "start");
  assert.equal(hitTest(2.95, 1, 3, 0.1), "end");
  assert.equal(hitTest(2, 1, 3, 0.1), "inside");
  assert.equal(hitTest(5, 1, 3, 0.1), "outside");
  assert.equal(hitTest(5, 1, null, 0.1), "outside");
});

test("drags: new ranges, edges, sliding; snapped, clamped to the view, never empty", () => {
  const view = [-1, 7];
  const region = { start: 0, end: 6 };
  assert.deepEqual(dragRegion("outside", 1.01, 3.03, region, view), { start: 1, end: 3.04 });
  assert.deepEqual(dragRegion("outside", 3.03, 1.01, region, view), { start: 1, end: 3.04 });
  assert.deepEqual(dragRegion("outside", 2, 2.001, region, view), { start: 2, end: 2.04 });
  assert.deepEqual(dragRegion("outside", 2, 99, region, view), { start: 2, end: 7 });
  assert.deepEqual(dragRegion("start", 0, -3, region, view), { start: -1, end: 6 });
  assert.deepEqual(dragRegion("start", 0, 10, region, view), { start: 5.96, end: 6 });
  assert.deepEqual(dragRegion("end", 6, 6.49, region, view), { start: 0, end: 6.48 });
  assert.deepEqual(dragRegion("end", 6, -4, region, view), { start: 0, end: 0.04 });
  assert.deepEqual(dragRegion("inside", 2, 2.5, { start: 1, end: 3 }, view), { start: 1.52, end: 3.52 });
  assert.deepEqual(dragRegion("inside", 2, 20, { start: 1, end: 3 }, view), { start: 5, end: 7 });
  assert.deepEqual(dragRegion("outside", -0.51, -0.2, region, view), { start: -0.52, end: 0.04 });
});

test("tick spacing keeps labels apart", () => {
  assert.equal(tickStep(0.01), 1);
  assert.equal(tickStep(0.1), 10);
  assert.equal(tickStep(100), 600);
});
