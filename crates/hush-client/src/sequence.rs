//! Per-sender sequence numbers (P520), as a pure function over what was seen: the last
//! number and a 64-message window below it, so a message that overtook another is
//! told apart from one that came twice.

/// What one message's sequence number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The first message seen from this sender: the baseline.
    First,
    /// The next one.
    Next,
    /// This many messages before it never arrived (yet).
    Gap(u64),
    /// It arrived after a later one; delivered, and reported.
    Reordered,
    /// Seen already (or too old to tell): dropped, and reported.
    Replay,
}

/// Bits of the window: bit `i` is set when `last - 1 - i` was seen.
const WINDOW: u64 = 64;

/// Judges `seq` against `seen` (last number, window) and returns the new state
/// (unchanged for a replay).
pub(crate) fn judge(seen: Option<(u64, u64)>, seq: u64) -> (Verdict, (u64, u64)) {
    let Some((last, window)) = seen else {
        return (Verdict::First, (seq, 0));
    };
    if seq > last {
        let step = seq - last;
        let shifted = if step >= WINDOW {
            0
        } else {
            (window << step) | (1 << (step - 1))
        };
        let verdict = if step == 1 {
            Verdict::Next
        } else {
            Verdict::Gap(step - 1)
        };
        return (verdict, (seq, shifted));
    }
    let back = last - seq;
    if back == 0 || back > WINDOW {
        return (Verdict::Replay, (last, window));
    }
    let bit = 1u64 << (back - 1);
    if window & bit != 0 {
        (Verdict::Replay, (last, window))
    } else {
        (Verdict::Reordered, (last, window | bit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> Vec<Verdict> {
        let mut state = None;
        seqs.iter()
            .map(|s| {
                let (v, next) = judge(state, *s);
                state = Some(next);
                v
            })
            .collect()
    }

    #[test]
    fn p520_in_order_gaps_reorders_and_replays() {
        use Verdict::*;
        assert_eq!(
            run(&[5, 6, 7]),
            [First, Next, Next],
            "a late joiner's baseline"
        );
        assert_eq!(run(&[1, 3, 2]), [First, Gap(1), Reordered], "two swapped");
        assert_eq!(
            run(&[1, 3, 2, 2, 3]),
            [First, Gap(1), Reordered, Replay, Replay]
        );
        assert_eq!(run(&[1, 2, 2]), [First, Next, Replay]);
        assert_eq!(
            run(&[1, 100, 2]),
            [First, Gap(98), Replay],
            "beyond the window"
        );
        // Below a late joiner's baseline: MLS decrypted it, so it is no copy (a secret
        // is usable once); it overtook nothing this device saw, but is reported.
        assert_eq!(run(&[10, 4]), [First, Reordered], "below the baseline");
    }
}
