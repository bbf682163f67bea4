// Random text edits that never split a UTF-16 surrogate pair.

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff
const WORDS = ['a', 'b', 'c', 'the ', 'quire ', 'é', 'ß', '中文', 'x\n', '😀', 'ab😀c', ' ', 'Zz']

/** A position in `s` that is not between the halves of a surrogate pair. */
function safe (s, pos) {
  if (pos > 0 && pos < s.length && isHigh(s.charCodeAt(pos - 1))) return pos + 1
  return pos
}

/**
 * One random edit on `ytext` using `r` (harness rng): mostly inserts of
 * `tag`-marked snippets at random positions, sometimes deletes.
 */
export function randomEdit (ytext, r, tag, { deleteRatio = 0.25 } = {}) {
  const s = ytext.toString()
  if (s.length > 0 && r() < deleteRatio) {
    const from = safe(s, r.int(s.length))
    if (from >= s.length) return
    const to = safe(s, Math.min(s.length, from + 1 + r.int(6)))
    ytext.delete(from, to - from)
  } else {
    const pos = safe(s, r.int(s.length + 1))
    ytext.insert(pos, r() < 0.5 ? tag : r.pick(WORDS))
  }
}
