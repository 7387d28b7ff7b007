//! Results of lookups, as the stream layer sees them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::name::DnsName;
use super::{RESOLVED_TYPE_ERROR, RESOLVED_TYPE_ERROR_TRANSIENT};

/// The outcome for one record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<T> {
    /// This family was not asked for.
    NotRequested,
    /// `ttl` is the resolver's TTL (what is left of it on a cache hit), capped at the cache's
    /// maximum age. Bucket and fuzz it with [`super::clip_dns_fuzzy_ttl`] before sending.
    Found {
        value: T,
        ttl: u32,
    },
    Failed(DnsFailure),
}

impl<T> Answer<T> {
    pub fn found(&self) -> Option<(&T, u32)> {
        match self {
            Answer::Found { value, ttl } => Some((value, *ttl)),
            _ => None,
        }
    }
    pub fn is_requested(&self) -> bool {
        !matches!(self, Answer::NotRequested)
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// NXDOMAIN.
    NxDomain,
    /// The name exists but has no record of this type (also CNAME chains that go nowhere).
    NoData,
    /// SERVFAIL, REFUSED, NOTIMP, FORMERR or another RCODE from every nameserver tried.
    ServerFailure { rcode: u8 },
    /// TC bit: the answer did not fit in UDP and we do not use TCP.
    Truncated,
    /// No valid answer after every try.
    Timeout,
    /// No free query id could be found (the id table is nearly full).
    NoQueryId,
}

/// A failed lookup, permanent or transient in Tor's sense (RESOLVED 0xF1 vs 0xF0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsFailure {
    pub cause: FailureCause,
}

impl DnsFailure {
    /// Permanent: the DNS said the name or record does not exist. Everything else is about our
    /// resolver and may work later.
    ///
    /// C tor (via libevent) counts only SERVFAIL, truncation and timeouts as transient and
    /// reports REFUSED/NOTIMP/FORMERR as permanent; we call those transient because they say
    /// nothing about the name.
    pub fn is_transient(&self) -> bool {
        !matches!(self.cause, FailureCause::NxDomain | FailureCause::NoData)
    }

    /// The RESOLVED answer type for this failure (tor-spec §6.4).
    pub fn resolved_type(&self) -> u8 {
        if self.is_transient() {
            RESOLVED_TYPE_ERROR_TRANSIENT
        } else {
            RESOLVED_TYPE_ERROR
        }
    }
}

/// Everything a waiter asked for about one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub ipv4: Answer<Ipv4Addr>,
    pub ipv6: Answer<Ipv6Addr>,
    /// PTR lookups only.
    pub hostname: Answer<DnsName>,
}

impl Resolution {
    pub const NONE: Resolution = Resolution {
        ipv4: Answer::NotRequested,
        ipv6: Answer::NotRequested,
        hostname: Answer::NotRequested,
    };

    /// A literal address: no lookup, C's `DEFAULT_DNS_TTL`.
    pub fn literal(addr: IpAddr) -> Resolution {
        let ttl = super::ttl::DEFAULT_DNS_TTL;
        let mut r = Resolution::NONE;
        match addr {
            IpAddr::V4(value) => r.ipv4 = Answer::Found { value, ttl },
            IpAddr::V6(value) => r.ipv6 = Answer::Found { value, ttl },
        }
        r
    }

    /// The first failure among the requested answers, when nothing requested was found; for
    /// END RESOLVEFAILED or a RESOLVED error. Transient wins over permanent, since one family
    /// timing out means we do not know the name is absent.
    pub fn failure(&self) -> Option<DnsFailure> {
        let failures = [
            failure_of(&self.ipv4),
            failure_of(&self.ipv6),
            failure_of(&self.hostname),
        ];
        let any_found = self.ipv4.found().is_some()
            || self.ipv6.found().is_some()
            || self.hostname.found().is_some();
        if any_found {
            return None;
        }
        let mut worst: Option<DnsFailure> = None;
        for f in failures.into_iter().flatten() {
            match worst {
                Some(w) if w.is_transient() || !f.is_transient() => {}
                _ => worst = Some(f),
            }
        }
        worst
    }
}

fn failure_of<T>(a: &Answer<T>) -> Option<DnsFailure> {
    match a {
        Answer::Failed(f) => Some(*f),
        _ => None,
    }
}

/// One record type's answer, untyped, as the resolver and cache keep it.
// Names are held inline on purpose: no allocation per answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    Addr(IpAddr),
    Host(DnsName),
}

/// Index of a record type in per-name tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4 = 0,
    V6 = 1,
    Ptr = 2,
}

impl Family {
    pub(crate) const ALL: [Family; 3] = [Family::V4, Family::V6, Family::Ptr];

    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
    pub(crate) fn qtype(self) -> super::wire::QueryType {
        match self {
            Family::V4 => super::wire::QueryType::A,
            Family::V6 => super::wire::QueryType::Aaaa,
            Family::Ptr => super::wire::QueryType::Ptr,
        }
    }
}

impl Resolution {
    /// Stores an untyped answer; a value of the wrong kind for the family counts as NODATA.
    pub(crate) fn set(&mut self, family: Family, answer: Answer<Value>) {
        let nodata = DnsFailure {
            cause: FailureCause::NoData,
        };
        match family {
            Family::V4 => {
                self.ipv4 = match answer {
                    Answer::Found {
                        value: Value::Addr(IpAddr::V4(value)),
                        ttl,
                    } => Answer::Found { value, ttl },
                    Answer::Found { .. } => Answer::Failed(nodata),
                    Answer::Failed(f) => Answer::Failed(f),
                    Answer::NotRequested => Answer::NotRequested,
                }
            }
            Family::V6 => {
                self.ipv6 = match answer {
                    Answer::Found {
                        value: Value::Addr(IpAddr::V6(value)),
                        ttl,
                    } => Answer::Found { value, ttl },
                    Answer::Found { .. } => Answer::Failed(nodata),
                    Answer::Failed(f) => Answer::Failed(f),
                    Answer::NotRequested => Answer::NotRequested,
                }
            }
            Family::Ptr => {
                self.hostname = match answer {
                    Answer::Found {
                        value: Value::Host(value),
                        ttl,
                    } => Answer::Found { value, ttl },
                    Answer::Found { .. } => Answer::Failed(nodata),
                    Answer::Failed(f) => Answer::Failed(f),
                    Answer::NotRequested => Answer::NotRequested,
                }
            }
        }
    }

    pub(crate) fn is_set(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.ipv4.is_requested(),
            Family::V6 => self.ipv6.is_requested(),
            Family::Ptr => self.hostname.is_requested(),
        }
    }

    /// Keeps only the families in `mask`.
    pub(crate) fn project(&self, mask: u8) -> Resolution {
        let mut r = Resolution::NONE;
        if mask & Family::V4.bit() != 0 {
            r.ipv4 = self.ipv4;
        }
        if mask & Family::V6.bit() != 0 {
            r.ipv6 = self.ipv6;
        }
        if mask & Family::Ptr.bit() != 0 {
            r.hostname = self.hostname;
        }
        r
    }
}
