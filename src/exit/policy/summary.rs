//! Port-list summaries of a policy: the microdescriptor `p`/`p6` lines and the descriptor
//! `ipv6-policy` line (dir-spec "ipv6-policy", C `policy_summarize`, `write_short_policy`).
//!
//! A port is summarized as accepted if some `*` accept rule reaches it before rejections
//! of more than the cutoff number of addresses: more than two IPv4 /8s (over 2^25
//! addresses), or more than one IPv6 /16 counted in /64s. Rejects of C's exact
//! `private_nets` entries do not count; accepts narrower than `*` are ignored.

use std::fmt;

use super::family::{Entry, FamilyAddr};
use super::rule::{PolicyAction, PortRange};

/// C `MAX_EXITPOLICY_SUMMARY_LEN`.
const MAX_SUMMARY_LEN: usize = 1000;

/// A summary: either the accepted ports or the rejected ports, whichever is shorter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSummary {
    /// `true` for `accept PORTS`, `false` for `reject PORTS`.
    pub accept: bool,
    /// Sorted, disjoint, non-adjacent ranges.
    pub ranges: Vec<PortRange>,
}

impl PortSummary {
    /// `reject 1-65535`: nothing accepted.
    pub fn is_reject_all(&self) -> bool {
        !self.accept && self.ranges == [PortRange::ALL]
    }

    /// Whether the summary says `port` is (probably) accepted.
    pub fn allows_port(&self, port: u16) -> bool {
        port != 0 && self.ranges.iter().any(|r| r.contains(port)) == self.accept
    }
}

impl fmt::Display for PortSummary {
    /// `accept 80,443` / `reject 25,119,135-139`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.accept { "accept " } else { "reject " })?;
        write_ranges(f, &self.ranges)
    }
}

/// Ranges as C writes them: `N` or `N-M`, comma separated (`*` is never used here).
fn write_ranges(out: &mut impl fmt::Write, ranges: &[PortRange]) -> fmt::Result {
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        if r.min() == r.max() {
            write!(out, "{}", r.min())?;
        } else {
            write!(out, "{}-{}", r.min(), r.max())?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Item {
    min: u16,
    max: u16,
    reject_count: u64,
    accepted: bool,
}

/// Reject-count cutoff and weighting for one family (C `REJECT_CUTOFF_*`).
struct Scale {
    /// Addresses are counted in units of 2^scale.
    scale: u8,
    /// A port stays acceptable while its reject count is at most this.
    cutoff: u64,
}

fn scale_for<A: FamilyAddr>() -> Scale {
    if A::BITS == 32 {
        // Every IPv4 address counts; more than two /8s rejected ⇒ port rejected.
        Scale {
            scale: 0,
            cutoff: 1 << (32 - 7),
        }
    } else {
        // IPv6 counted in /64s; more than one /16 rejected ⇒ port rejected.
        Scale {
            scale: 64,
            cutoff: 1 << (128 - 64 - 16),
        }
    }
}

/// Split items so that a boundary falls before `min` and after `max`; return the index of
/// the item starting at `min`.
fn split(items: &mut Vec<Item>, min: u16, max: u16) -> usize {
    let mut i = items.iter().position(|it| it.max >= min).unwrap_or(0);
    if items[i].min != min {
        let mut new = items[i];
        new.min = min;
        items[i].max = min - 1;
        items.insert(i + 1, new);
        i += 1;
    }
    let start = i;
    while items[i].max < max {
        i += 1;
    }
    if items[i].max != max {
        let mut new = items[i];
        new.min = max + 1;
        items[i].max = max;
        items.insert(i + 1, new);
    }
    start
}

/// C `policy_summarize` for one family's entries.
pub(crate) fn summarize<A: FamilyAddr>(entries: &[Entry<A>]) -> PortSummary {
    let Scale { scale, cutoff } = scale_for::<A>();
    let mut items = vec![Item {
        min: 1,
        max: 65535,
        reject_count: 0,
        accepted: false,
    }];
    for e in entries {
        let (min, max) = (e.ports.min(), e.ports.max());
        match e.action {
            PolicyAction::Accept => {
                if e.bits != 0 {
                    continue;
                }
                let start = split(&mut items, min, max);
                for it in items[start..].iter_mut().take_while(|it| it.max <= max) {
                    if !it.accepted && it.reject_count <= cutoff {
                        it.accepted = true;
                    }
                }
            }
            PolicyAction::Reject => {
                if A::is_listed_private_net(e.addr, e.bits) {
                    continue;
                }
                // Too small to ever matter (IPv6 narrower than /64).
                if e.bits > A::BITS - scale {
                    continue;
                }
                let exp = u32::from(A::BITS - scale - e.bits);
                let count = if exp >= 64 { u64::MAX } else { 1u64 << exp };
                let start = split(&mut items, min, max);
                for it in items[start..].iter_mut().take_while(|it| it.max <= max) {
                    it.reject_count = it.reject_count.saturating_add(count);
                }
            }
        }
    }

    // Merge neighbouring items with the same verdict into ranges.
    let mut accepts = Vec::new();
    let mut rejects = Vec::new();
    let mut start = 1u16;
    for (i, it) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        if last || it.accepted != items[i + 1].accepted {
            let r = PortRange::new(start, it.max).unwrap_or(PortRange::ALL);
            if it.accepted {
                accepts.push(r);
            } else {
                rejects.push(r);
            }
            if !last {
                start = items[i + 1].min;
            }
        }
    }

    if accepts.is_empty() {
        return PortSummary {
            accept: false,
            ranges: vec![PortRange::ALL],
        };
    }
    if rejects.is_empty() {
        return PortSummary {
            accept: true,
            ranges: vec![PortRange::ALL],
        };
    }
    let accepts_len = ranges_len(&accepts);
    let rejects_len = ranges_len(&rejects);
    let limit = MAX_SUMMARY_LEN - "accept".len() - 1;
    if rejects_len > limit && accepts_len > limit {
        // Too long either way: C keeps the accept list, cut at the last comma at or
        // before the limit, so the summary errs towards "rejected".
        let mut len = 0;
        let mut keep = 0;
        for (i, r) in accepts.iter().enumerate() {
            let next = len + usize::from(i > 0) + range_len(*r);
            if next > limit {
                break;
            }
            len = next;
            keep = i + 1;
        }
        accepts.truncate(keep);
        PortSummary {
            accept: true,
            ranges: accepts,
        }
    } else if rejects_len < accepts_len {
        PortSummary {
            accept: false,
            ranges: rejects,
        }
    } else {
        PortSummary {
            accept: true,
            ranges: accepts,
        }
    }
}

fn range_len(r: PortRange) -> usize {
    let digits = |n: u16| n.to_string().len();
    if r.min() == r.max() {
        digits(r.min())
    } else {
        digits(r.min()) + 1 + digits(r.max())
    }
}

fn ranges_len(ranges: &[PortRange]) -> usize {
    ranges.iter().map(|r| range_len(*r)).sum::<usize>() + ranges.len().saturating_sub(1)
}
