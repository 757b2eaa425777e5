// Unit tests of web/js/lyrics_lint.js under Node's test runner (run by test_lyrics_lint.py).

import assert from "node:assert/strict";
import test from "node:test";

import {
  countSyllables, estimateDuration, formatSeconds, lintLyrics, parseLines, sectionName, sections, tagCompletions,
} from "../../web/js/lyrics_lint.js";

const GOOD = `[Intro]

[Verse 1]
Walking through the empty streets
Thinking of your gentle touch

[Chorus - anthemic]
We rise together
Into the light

[Outro]`;

const codes = (text, options) => lintLyrics(text, options).issues.map((i) => i.code);

test("clean lyrics have no issues", () => {
  assert.deepEqual(lintLyrics(GOOD).issues, []);
});

test("double spaces, tabs, leading and trailing spaces are flagged on their line", () => {
  const { issues } = lintLyrics("[Verse]\nWalking  through\nA\tB\n trailing \nok");
  assert.deepEqual(issues.map((i) => [i.code, i.line]), [
    ["extra-spaces", 2], ["extra-spaces", 3], ["extra-spaces", 4], ["extra-spaces", 4],
  ]);
  const text = "[Verse]\nWalking  through";
  const first = issues[0];
  assert.equal(text.slice(first.from, first.to), "  ");
});

test("tag spam: several tags on a line, a tag in a sung line, the same tag twice", () => {
  assert.deepEqual(codes("[Verse][Chorus]\nla la la"), ["tag-spam", "empty-section"]);
  assert.deepEqual(codes("[Verse]\nla la [Chorus] la"), ["tag-spam"]);
  assert.deepEqual(codes("[Chorus]\n[Chorus]\nla la la"), ["empty-section", "tag-spam"]);
});

test("empty sections are flagged unless they are instrumental or the song has no lyrics", () => {
  const { issues } = lintLyrics("[Verse]\n\n[Chorus]\nWe rise\n[Bridge]");
  assert.deepEqual(issues.map((i) => [i.code, i.line]), [["empty-section", 1], ["empty-section", 5]]);
  assert.deepEqual(codes("[Intro]\n[Verse]\nla la\n[Solo]\n[Outro]"), []);
  assert.deepEqual(codes("[Intro]\n[Verse]\n[Chorus]\n[Outro]"), []);
});

test("very long lines are flagged, by syllables or characters", () => {
  const long = "and I keep on walking down the endless empty road tonight without you by my side";
  assert.deepEqual(codes(`[Verse]\n${long}`), ["long-line"]);
  assert.deepEqual(codes(`[Verse]\n${"我".repeat(20)}`), ["long-line"]);
  assert.deepEqual(codes("[Verse]\nshort and sweet"), []);
});

test("brackets without their pair and empty tags are flagged", () => {
  assert.deepEqual(codes("[Verse\nla la"), ["unclosed-tag"]);
  assert.deepEqual(codes("[]\nla la"), ["empty-tag"]);
});

test("tag names drop numbers and descriptors", () => {
  assert.equal(sectionName("Verse 2"), "verse");
  assert.equal(sectionName("Chorus - anthemic"), "chorus");
  assert.equal(sectionName("Pre-Chorus"), "pre-chorus");
  assert.equal(sections(parseLines(GOOD)).map((s) => s.name).join(","), "intro,verse,chorus,outro");
});

test("syllables: vowel groups per word, one per CJK sign", () => {
  assert.equal(countSyllables("Walking through the empty streets"), 7);
  assert.equal(countSyllables("We rise together"), 5);
  assert.equal(countSyllables("夜空の星"), 4);
});

test("duration estimate: bars per line and instrumental sections, scaled by bpm and beats per bar", () => {
  const at120 = estimateDuration(GOOD, { bpm: 120 });
  // intro 4 + verse 2 lines × 2 bars + chorus 2 × 2 + outro 4 = 16 bars of 4 beats at 0.5 s.
  assert.equal(at120.bars, 16);
  assert.equal(at120.seconds, 32);
  assert.equal(at120.bpmAssumed, false);
  assert.equal(estimateDuration(GOOD, { bpm: 60 }).seconds, 64);
  assert.equal(estimateDuration(GOOD, { bpm: 120, beatsPerBar: 3 }).seconds, 24);
  const auto = estimateDuration(GOOD, { bpm: 0 });
  assert.equal(auto.bpm, 120);
  assert.equal(auto.bpmAssumed, true);
  assert.equal(estimateDuration("").seconds, 0);
});

test("a long line takes more than two bars", () => {
  const line = "la ".repeat(24).trim();
  assert.equal(estimateDuration(`[Verse]\n${line}`, { bpm: 120 }).bars, 3);
});

test("lyrics longer than the song get a too-long issue", () => {
  assert.deepEqual(codes(GOOD, { bpm: 120, duration: 20 }), ["too-long"]);
  assert.deepEqual(codes(GOOD, { bpm: 120, duration: 32 }), []);
});

test("tag completion by prefix and by word", () => {
  assert.deepEqual(tagCompletions("ch"), ["Chorus", "Pre-Chorus", "Post-Chorus"]);
  assert.deepEqual(tagCompletions("Ver").slice(0, 2), ["Verse", "Verse 1"]);
  assert.ok(tagCompletions("chorus").includes("Pre-Chorus"));
  assert.equal(tagCompletions("").length, 8);
  assert.deepEqual(tagCompletions("zzz"), []);
});

test("seconds format as m:ss", () => {
  assert.equal(formatSeconds(65), "1:05");
  assert.equal(formatSeconds(0), "0:00");
});
