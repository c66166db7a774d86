//! Action patterns: `*` stands for any run of characters (`"USER_*"`, `"user.*"`,
//! `"*_FAILED"`). Matching, and whether two patterns could both match one action.

/// Whether `action` is a pattern rather than an exact action.
pub(crate) fn is_pattern(action: &str) -> bool {
    action.contains('*')
}

/// Whether `pattern` matches all of `action`.
pub(crate) fn matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    // Greedy with backtracking to the last star: linear in practice, never exponential.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < a.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == a[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// Whether some action matches both patterns: a walk over pairs of positions, where a
/// star may take nothing or the other side's next character.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        let cell = i * (b.len() + 1) + j;
        if std::mem::replace(&mut seen[cell], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let (sa, sb) = (a.get(i) == Some(&b'*'), b.get(j) == Some(&b'*'));
        // A star takes nothing.
        if sa {
            todo.push((i + 1, j));
        }
        if sb {
            todo.push((i, j + 1));
        }
        // Both read one character.
        match (a.get(i), b.get(j)) {
            (Some(_), Some(_)) if sa && !sb => todo.push((i, j + 1)),
            (Some(_), Some(_)) if sb && !sa => todo.push((i + 1, j)),
            (Some(x), Some(y)) if !sa && !sb && x == y => todo.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(matches("USER_*", "USER_CREATED"));
        assert!(matches("USER_*", "USER_"));
        assert!(!matches("USER_*", "ORDER_CREATED"));
        assert!(matches("user.*", "user.created"));
        assert!(matches("*_FAILED", "ORDER_FAILED"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("a*a", "aa") && !matches("a*a", "a"));
        assert!(matches("EXACT", "EXACT") && !matches("EXACT", "EXACTLY"));
    }

    #[test]
    fn overlapping() {
        assert!(overlap("USER_*", "*_CREATED"));
        assert!(overlap("USER_*", "USER_C*"));
        assert!(!overlap("USER_*", "ORDER_*"));
        assert!(!overlap("a*b", "a*c"));
        assert!(overlap("*x*", "*y*"));
        assert!(!overlap("USER_*_X", "USER_*_Y"));
        assert!(overlap("a*", "a"));
    }

    #[test]
    fn overlap_agrees_with_matching_on_small_strings() {
        let patterns = ["a*", "*b", "a*b", "*", "ab", "a*a", "*ab*", "b*a", "ba"];
        let words = [
            "", "a", "b", "aa", "ab", "ba", "bb", "aab", "aba", "abb", "bab", "abab",
        ];
        for p in patterns {
            for q in patterns {
                let common = words.iter().any(|w| matches(p, w) && matches(q, w));
                if common {
                    assert!(overlap(p, q), "{p} {q}");
                }
            }
        }
        assert!(!overlap("a*b", "b*a"));
    }
}
