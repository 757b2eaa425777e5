// Lyrics linter and duration estimate for ACE-Step (pure functions, no DOM: the editor and the tests use them).
//
// Why: ACE-Step skips or rushes lyrics it cannot place. The causes users and maintainers name are extra
// spaces, redundant ("spam") tags, sections with a tag but no lines, and lines too long to sing in one
// phrase; lyrics that need more time than the song has get cut. The linter finds those before a run.
//
// The duration estimate is a deliberately simple model, stated here so users can reason about it:
// a sung line takes two bars or half a beat per syllable, whichever is longer; a section rounds up to whole
// bars; a tagged section without lines (intro, solo, ...) counts 4 bars for intro/outro and 8 otherwise.
// At the chosen bpm and beats per bar (4 when the time signature is auto) that gives seconds.

export const SECTION_TAGS = [
  "Intro", "Verse", "Verse 1", "Verse 2", "Verse 3", "Pre-Chorus", "Chorus", "Post-Chorus", "Hook", "Refrain",
  "Bridge", "Breakdown", "Build-Up", "Drop", "Interlude", "Instrumental", "Solo", "Guitar Solo", "Break",
  "Rap", "Spoken Word", "Outro", "Fade Out",
];

// Sections that are meant to have no sung lines (their bar count is used when they are empty).
const INSTRUMENTAL_BARS = {
  intro: 4, outro: 4, "fade out": 4, end: 4,
  instrumental: 8, inst: 8, interlude: 8, solo: 8, "guitar solo": 8, break: 8, breakdown: 8, drop: 8,
  "build-up": 8, buildup: 8,
};

export const DEFAULT_BPM = 120;
export const DEFAULT_BEATS_PER_BAR = 4;
export const LINE_MIN_BARS = 2;
export const BEATS_PER_SYLLABLE = 0.5;
export const LONG_LINE_SYLLABLES = 16;
export const LONG_LINE_CHARS = 80;
export const DURATION_TOLERANCE = 1.1;

const TAG_RE = /\[([^\[\]\n]*)\]/g;
const CJK_RE = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/g;
const VOWEL_GROUP_RE = /[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœаеёиоуыэюяіїєαεηιουω]+/gi;

/** The section name of a tag's inner text: "Chorus - anthemic" → "chorus", "Verse 2" → "verse". */
export function sectionName(inner) {
  return inner.split(/\s[-–:]\s|:/)[0].replace(/\d+/g, "").trim().toLowerCase();
}

/** Whether a section (by name) is meant to be played without sung lines. */
export function isInstrumentalSection(name) {
  return name in INSTRUMENTAL_BARS;
}

/** A rough syllable count: vowel groups per word (a final silent "e" dropped), one per CJK/kana/hangul sign. */
export function countSyllables(text) {
  const cjk = (text.match(CJK_RE) || []).length;
  const rest = text.replace(CJK_RE, " ").replace(/\([^)]*\)/g, " ");
  let count = cjk;
  for (const word of rest.split(/[^\p{L}']+/u)) {
    if (!word) continue;
    const lower = word.toLowerCase().replace(/e$/, "");
    count += Math.max(1, (lower.match(VOWEL_GROUP_RE) || []).length);
  }
  return count;
}

/** One entry per line: its text, its offset in the whole text, its tags, and whether it is sung. */
export function parseLines(text) {
  const lines = [];
  let offset = 0;
  for (const [index, line] of text.split("\n").entries()) {
    const tags = [...line.matchAll(TAG_RE)].map((m) => ({
      inner: m[1], name: sectionName(m[1]), from: offset + m.index, to: offset + m.index + m[0].length,
    }));
    const words = line.replace(TAG_RE, "").trim();
    lines.push({ index, text: line, from: offset, to: offset + line.length, tags, sung: words.length > 0 });
    offset += line.length + 1;
  }
  return lines;
}

function issue(code, line, from, to, message, severity = "warning") {
  return { code, severity, line: line + 1, from, to, message };
}

function spaceIssues(line) {
  const found = [];
  for (const m of line.text.matchAll(/[ \t]{2,}|\t/g)) {
    const at = line.from + m.index;
    found.push(issue("extra-spaces", line.index, at, at + m[0].length,
      `line ${line.index + 1}: ${m[0].includes("\t") ? "tab" : "double space"} (extra spaces can make the model skip words)`));
  }
  const lead = line.text.match(/^[ \t]+/);
  if (lead && lead[0].length === 1 && line.text.trim()) {
    found.push(issue("extra-spaces", line.index, line.from, line.from + 1, `line ${line.index + 1}: leading space`));
  }
  const trail = line.text.match(/[ \t]+$/);
  if (trail && trail[0].length === 1 && line.text.trim()) {
    const at = line.to - 1;
    found.push(issue("extra-spaces", line.index, at, line.to, `line ${line.index + 1}: trailing space`));
  }
  return found;
}

function bracketIssues(line) {
  const stripped = line.text.replace(TAG_RE, "");
  if (!/[\[\]]/.test(stripped)) return [];
  return [issue("unclosed-tag", line.index, line.from, line.to,
    `line ${line.index + 1}: a "[" or "]" without its pair; write tags as [Chorus]`)];
}

function tagIssues(lines) {
  const found = [];
  let previousTag = null;
  for (const line of lines) {
    const { tags } = line;
    for (const tag of tags) {
      if (!tag.name) found.push(issue("empty-tag", line.index, tag.from, tag.to, `line ${line.index + 1}: empty tag []`));
    }
    if (tags.length > 1) {
      found.push(issue("tag-spam", line.index, tags[0].from, tags[tags.length - 1].to,
        `line ${line.index + 1}: ${tags.length} tags on one line; give each section one tag on its own line`));
    } else if (tags.length === 1 && line.sung) {
      found.push(issue("tag-spam", line.index, tags[0].from, tags[0].to,
        `line ${line.index + 1}: tag inside a sung line; put it on its own line above`));
    }
    if (tags.length === 1 && !line.sung && previousTag && previousTag.name === tags[0].name
        && previousTag.inner === tags[0].inner) {
      found.push(issue("tag-spam", line.index, tags[0].from, tags[0].to,
        `line ${line.index + 1}: [${tags[0].inner}] repeats the tag right above it`));
    }
    if (line.sung) previousTag = null;
    else if (tags.length) previousTag = tags[tags.length - 1];
  }
  return found;
}

/** The song's sections: each tag line opens one; lines before the first tag form an untagged section. */
export function sections(lines) {
  const result = [];
  let current = { name: "", tag: null, lines: [] };
  for (const line of lines) {
    const tagLine = line.tags.length > 0 && !line.sung;
    if (tagLine) {
      if (current.tag || current.lines.length) result.push(current);
      for (const tag of line.tags.slice(0, -1)) result.push({ name: tag.name, tag: { ...tag, line: line.index }, lines: [] });
      const last = line.tags[line.tags.length - 1];
      current = { name: last.name, tag: { ...last, line: line.index }, lines: [] };
    } else if (line.sung) {
      current.lines.push(line);
    }
  }
  if (current.tag || current.lines.length) result.push(current);
  return result;
}

function sectionIssues(parts, sungTotal) {
  if (sungTotal === 0) return [];
  return parts.filter((part) => part.tag && part.lines.length === 0 && part.tag.name && !isInstrumentalSection(part.name))
    .map((part) => issue("empty-section", part.tag.line, part.tag.from, part.tag.to,
      `line ${part.tag.line + 1}: [${part.tag.inner}] has no lines; add lyrics or remove the tag`));
}

function lengthIssues(lines) {
  const found = [];
  for (const line of lines) {
    if (!line.sung) continue;
    const words = line.text.replace(TAG_RE, "").trim();
    const syllables = countSyllables(words);
    if (syllables > LONG_LINE_SYLLABLES || words.length > LONG_LINE_CHARS) {
      found.push(issue("long-line", line.index, line.from, line.to,
        `line ${line.index + 1}: very long line (about ${syllables} syllables); split it, 6-10 syllables sing best`));
    }
  }
  return found;
}

/** Beats one sung line needs (see the model at the top). */
export function lineBeats(text, beatsPerBar = DEFAULT_BEATS_PER_BAR) {
  return Math.max(LINE_MIN_BARS * beatsPerBar, Math.ceil(countSyllables(text) * BEATS_PER_SYLLABLE));
}

/** Seconds the lyrics need at `bpm` (0 or missing: 120, flagged as assumed) and `beatsPerBar` (default 4). */
export function estimateDuration(text, { bpm = 0, beatsPerBar = 0 } = {}) {
  const tempo = bpm > 0 ? bpm : DEFAULT_BPM;
  const perBar = beatsPerBar > 0 ? beatsPerBar : DEFAULT_BEATS_PER_BAR;
  let bars = 0;
  const parts = sections(parseLines(text));
  for (const part of parts) {
    if (part.lines.length === 0) {
      bars += INSTRUMENTAL_BARS[part.name] ?? 0;
      continue;
    }
    const beats = part.lines.reduce((sum, line) => sum + lineBeats(line.text.replace(TAG_RE, "").trim(), perBar), 0);
    bars += Math.ceil(beats / perBar);
  }
  const sungLines = parts.reduce((sum, part) => sum + part.lines.length, 0);
  return { seconds: (bars * perBar * 60) / tempo, bars, bpm: tempo, bpmAssumed: !(bpm > 0), beatsPerBar: perBar, sungLines };
}

/** "1:05" for 65 seconds. */
export function formatSeconds(seconds) {
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

/**
 * Everything the editor shows: `issues` (code, severity, 1-based line, character range, message), sorted by
 * position, and `estimate` (see estimateDuration). With `duration` (> 0, seconds the song has) lyrics that
 * need clearly more time add a "too-long" issue.
 */
export function lintLyrics(text, { bpm = 0, beatsPerBar = 0, duration = 0 } = {}) {
  const lines = parseLines(text);
  const parts = sections(lines);
  const sungTotal = lines.filter((line) => line.sung).length;
  const issues = [
    ...lines.flatMap(spaceIssues), ...lines.flatMap(bracketIssues), ...tagIssues(lines),
    ...sectionIssues(parts, sungTotal), ...lengthIssues(lines),
  ];
  const estimate = estimateDuration(text, { bpm, beatsPerBar });
  if (duration > 0 && estimate.seconds > duration * DURATION_TOLERANCE) {
    issues.push(issue("too-long", lines.length - 1, 0, 0,
      `the lyrics need about ${formatSeconds(estimate.seconds)} at ${estimate.bpm} bpm but the song is `
      + `${formatSeconds(duration)}: lines may be skipped; lengthen the song or cut lines`));
  }
  issues.sort((a, b) => a.from - b.from || a.line - b.line);
  return { issues, estimate };
}

/** Section tags that complete `prefix` (case-insensitive, by word start), best first. */
export function tagCompletions(prefix, limit = 8) {
  const wanted = prefix.trim().toLowerCase();
  if (!wanted) return SECTION_TAGS.slice(0, limit);
  const starts = SECTION_TAGS.filter((tag) => tag.toLowerCase().startsWith(wanted));
  const words = SECTION_TAGS.filter((tag) => !starts.includes(tag)
    && tag.toLowerCase().split(/[\s-]/).some((word) => word.startsWith(wanted)));
  return [...starts, ...words].slice(0, limit);
}
