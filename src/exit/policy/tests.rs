//! Whole-policy tests. Expected descriptor lines and summaries are what C tor 0.4.9's
//! `policies.c` produces for the same options (derived from its code, and for the
//! default and reduced policies also the well-known `p` lines of live relays).

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules(s: &str) -> Vec<PolicyRule> {
    let parsed = parse_policy_list(s).unwrap();
    assert!(parsed.ignored.is_empty());
    parsed.rules
}

fn exit_with(policy: Option<&str>) -> ExitPolicyBuilder {
    ExitPolicyBuilder {
        exit_relay: ExitRelay::Enabled,
        exit_policy: policy.map(rules),
        published_addresses: vec![ip("203.0.113.5")],
        ..ExitPolicyBuilder::default()
    }
}

fn descriptor(p: &ExitPolicy) -> String {
    let mut s = String::new();
    p.write_descriptor_lines(&mut s);
    s
}

const PRIVATE_V4_LINES: &str = "reject 0.0.0.0/8:*
reject 169.254.0.0/16:*
reject 127.0.0.0/8:*
reject 192.168.0.0/16:*
reject 10.0.0.0/8:*
reject 172.16.0.0/12:*
";

const DEFAULT_TAIL_LINES: &str = "reject *:25
reject *:119
reject *:135-139
reject *:445
reject *:563
reject *:1214
reject *:4661-4666
reject *:6346-6429
reject *:6699
reject *:6881-6999
accept *:*
";

const DEFAULT_SUMMARY: &str =
    "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999";

const REDUCED_SUMMARY: &str = "accept 20-23,43,53,79-81,88,110,143,194,220,389,443,464-465,\
531,543-544,554,563,587,636,706,749,873,902-904,981,989-995,1194,1220,1293,1500,1533,1677,\
1723,1755,1863,2082-2083,2086-2087,2095-2096,2102-2104,3128,3389,3690,4321,4643,5050,5190,\
5222-5223,5228,5900,6660-6669,6679,6697,8000,8008,8074,8080,8082,8087-8088,8232-8233,\
8332-8333,8443,8888,9418,9999-10000,11371,18080-18081,18089,19294,19638,50002,64738";

#[test]
fn default_options_make_a_non_exit() {
    let p = ExitPolicyBuilder::default().build();
    assert!(!ExitPolicyBuilder::default().is_exit());
    assert!(p.is_reject_star());
    assert_eq!(descriptor(&p), "reject *:*\n");
    assert_eq!(p.summary_v4().to_string(), "reject 1-65535");
    assert_eq!(p.allows(ip("8.8.8.8"), 80), PolicyDecision::Rejected);
    assert_eq!(
        p.allows_port_for_unknown_address(443),
        PolicyDecision::Rejected
    );
    assert!(!p.is_exit_flag_eligible());
    assert_eq!(p, ExitPolicy::reject_all());
}

#[test]
fn exit_relay_auto_follows_c() {
    let auto = ExitPolicyBuilder::default();
    let with = |f: &dyn Fn(&mut ExitPolicyBuilder)| {
        let mut b = auto.clone();
        f(&mut b);
        b
    };
    assert!(!auto.is_exit());
    assert!(with(&|b| b.exit_policy = Some(rules("accept *:80"))).is_exit());
    // An ExitPolicy option that is set but empty still counts as set.
    assert!(with(&|b| b.exit_policy = Some(Vec::new())).is_exit());
    assert!(with(&|b| b.reduced_exit_policy = true).is_exit());
    assert!(with(&|b| b.ipv6_exit = true).is_exit());
    assert!(with(&|b| b.exit_relay = ExitRelay::Enabled).is_exit());
    // ExitRelay 0 wins over everything.
    let off = with(&|b| {
        b.exit_relay = ExitRelay::Disabled;
        b.exit_policy = Some(rules("accept *:*"));
        b.ipv6_exit = true;
    });
    assert!(!off.is_exit());
    let p = off.build();
    assert!(p.is_reject_star());
    assert!(!p.ipv6_exit());
    assert_eq!(descriptor(&p), "reject *:*\n");
    // IPv6Exit alone with auto gives the default exit policy.
    let v6 = with(&|b| b.ipv6_exit = true).build();
    assert_eq!(v6.summary_v4().to_string(), DEFAULT_SUMMARY);
}

#[test]
fn default_exit_policy_with_reject_private() {
    let p = exit_with(None).build();
    let want = format!("{PRIVATE_V4_LINES}reject 203.0.113.5:*\n{DEFAULT_TAIL_LINES}");
    assert_eq!(descriptor(&p), want);
    assert_eq!(p.summary_v4().to_string(), DEFAULT_SUMMARY);
    assert!(p.is_exit_flag_eligible());
    assert!(!p.is_reject_star());

    assert_eq!(p.allows(ip("8.8.8.8"), 80), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("8.8.8.8"), 25), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("8.8.8.8"), 6900), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("8.8.8.8"), 7000), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("203.0.113.5"), 80), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("203.0.113.6"), 80), PolicyDecision::Accepted);
    for private in [
        "10.1.2.3",
        "127.0.0.1",
        "192.168.1.1",
        "172.20.0.1",
        "169.254.9.9",
        "0.0.0.1",
    ] {
        assert_eq!(
            p.allows(ip(private), 80),
            PolicyDecision::Rejected,
            "{private}"
        );
    }
    // IPv6 is refused without IPv6Exit, and no ipv6-policy line is written.
    assert_eq!(p.allows(ip("2001:db8::1"), 80), PolicyDecision::Rejected);
    assert!(!p.permits_exit_to(ip("2001:db8::1"), 80));
    assert!(p.permits_exit_to(ip("8.8.8.8"), 443));
    assert!(!p.permits_exit_to(ip("0.0.0.0"), 443));
    assert_eq!(p.ipv6_policy_line(), None);
    assert!(p.is_reject_star_v6());

    assert_eq!(
        p.allows_port_for_unknown_address(80),
        PolicyDecision::ProbablyAccepted
    );
    assert_eq!(
        p.allows_port_for_unknown_address(25),
        PolicyDecision::Rejected
    );
}

#[test]
fn default_exit_policy_without_reject_private() {
    let mut b = exit_with(None);
    b.reject_private = false;
    let p = b.build();
    // Without ExitPolicyRejectPrivate our own address is not rejected either.
    assert_eq!(descriptor(&p), DEFAULT_TAIL_LINES);
    assert_eq!(p.allows(ip("127.0.0.1"), 80), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("203.0.113.5"), 80), PolicyDecision::Accepted);
    assert_eq!(
        p.allows_port_for_unknown_address(80),
        PolicyDecision::Accepted
    );
    assert_eq!(p.summary_v4().to_string(), DEFAULT_SUMMARY);
}

#[test]
fn reduced_exit_policy() {
    let mut b = exit_with(None);
    b.reduced_exit_policy = true;
    let p = b.build();
    assert_eq!(p.summary_v4().to_string(), REDUCED_SUMMARY);
    for port in [80, 443, 22, 53, 8443, 64738] {
        assert_eq!(
            p.allows(ip("8.8.8.8"), port),
            PolicyDecision::Accepted,
            "{port}"
        );
    }
    for port in [25, 119, 445, 6881, 8081, 65535] {
        assert_eq!(
            p.allows(ip("8.8.8.8"), port),
            PolicyDecision::Rejected,
            "{port}"
        );
    }
    assert!(p.is_exit_flag_eligible());
    let d = descriptor(&p);
    assert!(d.starts_with(&format!(
        "{PRIVATE_V4_LINES}reject 203.0.113.5:*\naccept *:20-23\n"
    )));
    assert!(d.ends_with("accept *:64738\nreject *:*\n"));
    assert_eq!(d.lines().count(), 6 + 1 + REDUCED_ACCEPTED_PORTS.len() + 1);
}

#[test]
fn loopback_test_policy() {
    // The policy our loopback tests use (test networks run ExitPolicyRejectPrivate 0).
    let mut b = exit_with(Some("accept 127.0.0.1:*, reject *:*"));
    b.reject_private = false;
    b.published_addresses = vec![ip("127.0.0.1")];
    let p = b.build();
    assert_eq!(descriptor(&p), "accept 127.0.0.1:*\nreject *:*\n");
    assert_eq!(p.allows(ip("127.0.0.1"), 8080), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("127.0.0.2"), 8080), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("8.8.8.8"), 80), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("::1"), 80), PolicyDecision::Rejected);
    assert!(!p.is_reject_star());
    assert_eq!(
        p.allows_port_for_unknown_address(80),
        PolicyDecision::ProbablyRejected
    );
    assert_eq!(p.summary_v4().to_string(), "reject 1-65535");
    assert!(!p.is_exit_flag_eligible());
    assert!(!p.is_general_exit(true));

    // With ExitPolicyRejectPrivate the earlier `reject 127.0.0.0/8:*` covers the accept,
    // which C drops; nothing is left but rejects, so the descriptor is `reject *:*`.
    b.reject_private = true;
    let p = b.build();
    assert!(p.is_reject_star());
    assert_eq!(descriptor(&p), "reject *:*\n");
    assert_eq!(p.allows(ip("127.0.0.1"), 8080), PolicyDecision::Rejected);
}

#[test]
fn ipv6_exit() {
    let mut b = exit_with(None);
    b.ipv6_exit = true;
    b.published_addresses.push(ip("2001:db8::5"));
    let p = b.build();
    // IPv6 rules stay out of the accept/reject lines.
    let want = format!(
        "{PRIVATE_V4_LINES}reject 203.0.113.5:*\n{DEFAULT_TAIL_LINES}ipv6-policy {DEFAULT_SUMMARY}\n"
    );
    assert_eq!(descriptor(&p), want);
    assert_eq!(p.summary_v6().to_string(), DEFAULT_SUMMARY);
    assert_eq!(p.allows(ip("2001:db8::1"), 443), PolicyDecision::Accepted);
    assert!(p.permits_exit_to(ip("2001:db8::1"), 443));
    assert_eq!(p.allows(ip("2001:db8::5"), 443), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("2001:db8::1"), 25), PolicyDecision::Rejected);
    for private in [
        "fc00::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
    ] {
        assert_eq!(
            p.allows(ip(private), 80),
            PolicyDecision::Rejected,
            "{private}"
        );
    }
    assert!(!p.permits_exit_to(ip("::"), 80));
    // [::]/127 is covered by [::]/8 and removed, as C does.
    let v6: Vec<String> = p.ipv6_rules().map(|r| r.to_string()).collect();
    assert_eq!(
        v6[..7],
        [
            "reject [::]/8:*",
            "reject [fc00::]/7:*",
            "reject [fe80::]/10:*",
            "reject [fec0::]/10:*",
            "reject [ff00::]/8:*",
            "reject [2001:db8::5]:*",
            "reject *6:25",
        ]
    );
    assert_eq!(v6.last().unwrap(), "accept *6:*");

    // An IPv6 exit whose IPv6 side rejects everything writes no ipv6-policy line.
    let mut b = exit_with(Some("reject *6:*, accept *:80"));
    b.ipv6_exit = true;
    let p = b.build();
    assert_eq!(p.ipv6_policy_line(), None);
    assert!(p.is_reject_star_v6());
    assert!(!descriptor(&p).contains("ipv6-policy"));

    // IPv6-only exit: accept6 lines configured.
    let mut b = exit_with(Some(
        "accept6 *:80, accept6 [2001:db8::]/32:443, reject *:*",
    ));
    b.ipv6_exit = true;
    let p = b.build();
    assert_eq!(
        p.ipv6_policy_line().as_deref(),
        Some("ipv6-policy accept 80")
    );
    assert_eq!(p.allows(ip("2001:db8::9"), 443), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("2001:db9::9"), 443), PolicyDecision::Rejected);
    assert_eq!(p.summary_v4().to_string(), "reject 1-65535");
    assert_eq!(
        p.allows_port_for_unknown_address(80),
        PolicyDecision::ProbablyAccepted
    );
}

#[test]
fn own_and_interface_addresses() {
    let mut b = exit_with(Some("accept *:*"));
    b.published_addresses = vec![ip("203.0.113.5"), ip("2001:db8::5"), ip("10.0.0.1")];
    b.reject_local_interfaces = true;
    b.outbound_bind_addresses = vec![ip("198.51.100.8")];
    b.port_addresses = vec![ip("0.0.0.0"), ip("198.51.100.9")];
    b.interface_addresses = vec![
        ip("192.168.1.2"),
        ip("198.51.100.7"),
        ip("203.0.113.5"),
        ip("2001:db8::7"),
        ip("224.0.0.1"),
    ];
    let p = b.build();
    // Published, outbound, port, then interface addresses; only public ones; IPv6 ones
    // only with IPv6Exit; duplicates dropped.
    let want = format!(
        "{PRIVATE_V4_LINES}reject 203.0.113.5:*\nreject 198.51.100.8:*\nreject 198.51.100.9:*\n\
         reject 198.51.100.7:*\naccept *:*\n"
    );
    assert_eq!(descriptor(&p), want);
    assert_eq!(p.ipv6_rules().count(), 1);

    b.ipv6_exit = true;
    let p = b.build();
    let v6: Vec<String> = p.ipv6_rules().map(|r| r.to_string()).collect();
    assert_eq!(
        v6[5..],
        [
            "reject [2001:db8::5]:*",
            "reject [2001:db8::7]:*",
            "accept *6:*"
        ]
    );

    // Without ExitPolicyRejectPrivate the published address is not rejected, but the
    // local-interface ones still are.
    b.reject_private = false;
    b.ipv6_exit = false;
    let p = b.build();
    assert_eq!(
        descriptor(&p),
        "reject 198.51.100.8:*\nreject 198.51.100.9:*\nreject 198.51.100.7:*\nreject 203.0.113.5:*\naccept *:*\n"
    );
}

#[test]
fn configured_rules_and_redundancy_removal() {
    // A rule a later same-action rule covers, with no opposite rule in between that
    // intersects it, goes: both items are redundant with the default tail.
    let p = exit_with(Some("reject 1.2.3.4:25, accept *:80")).build();
    let plain = exit_with(None).build();
    assert_eq!(descriptor(&p), descriptor(&plain));
    assert_eq!(p, plain);

    // An earlier rule covering a later one removes the later one, whatever its action:
    // `accept *:25` removes the tail's `reject *:25`, and is then itself redundant with
    // the final `accept *:*`.
    let p = exit_with(Some("accept *:25")).build();
    let tail = DEFAULT_TAIL_LINES.strip_prefix("reject *:25\n").unwrap();
    assert_eq!(
        descriptor(&p),
        format!("{PRIVATE_V4_LINES}reject 203.0.113.5:*\n{tail}")
    );
    assert_eq!(p.allows(ip("8.8.8.8"), 25), PolicyDecision::Accepted);
    // Kept when a later opposite rule intersects it.
    let p = exit_with(Some("accept *:25, reject 8.8.8.8:*")).build();
    assert!(descriptor(&p).contains("accept *:25\nreject 8.8.8.8:*\nreject *:119\n"));

    // ...but not when an opposite rule in between intersects it.
    let mut b = exit_with(Some("reject 1.2.3.4:25, accept 1.2.3.0/24:25, reject *:25"));
    b.reject_private = false;
    let p = b.build();
    assert_eq!(
        descriptor(&p).lines().take(3).collect::<Vec<_>>(),
        ["reject 1.2.3.4:25", "accept 1.2.3.0/24:25", "reject *:25"]
    );
    assert_eq!(p.allows(ip("1.2.3.4"), 25), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("1.2.3.5"), 25), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("1.2.4.5"), 25), PolicyDecision::Rejected);

    // Everything after a catch-all is dead, including the default tail.
    let mut b = exit_with(Some("accept *:80, reject *:*, accept *:443"));
    b.reject_private = false;
    let p = b.build();
    assert_eq!(descriptor(&p), "accept *:80\nreject *:*\n");
    assert!(!p.is_exit_flag_eligible());

    // A bridge gets no default tail.
    let mut b = exit_with(Some("accept *:80"));
    b.bridge_relay = true;
    b.reject_private = false;
    let p = b.build();
    assert_eq!(descriptor(&p), "accept *:80\nreject *:*\n");

    // Masks keep the address as written; /0 is written `*`.
    // (from_rules: no redundancy removal, as C reads a descriptor's policy.)
    let p = ExitPolicy::from_rules(
        &rules(
            "reject 1.2.3.4/8:25-26, accept 5.6.7.8/255.255.255.255:80-81, accept 9.9.9.9/0:443, \
             reject6 [::1]:*, accept 1.1.1.1/31:1-65535, reject *:*",
        ),
        false,
    );
    assert_eq!(
        descriptor(&p),
        "reject 1.2.3.4/8:25-26\naccept 5.6.7.8:80-81\naccept *:443\naccept 1.1.1.1/31:*\nreject *:*\n"
    );
    // ...whereas building our own policy drops what cannot matter: the /8 reject is
    // covered by the final reject with no intersecting accept in between.
    let mut b = exit_with(Some(
        "reject 1.2.3.4/8:25-26, accept 5.6.7.8:80-81, reject *:*",
    ));
    b.reject_private = false;
    assert_eq!(descriptor(&b.build()), "accept 5.6.7.8:80-81\nreject *:*\n");
}

#[test]
fn first_match_wins() {
    let p = ExitPolicy::from_rules(
        &rules("reject 1.2.3.4:80, accept 1.2.3.0/24:*, reject [2001:db8::]/32:*, reject *4:*"),
        false,
    );
    assert_eq!(p.allows(ip("1.2.3.4"), 80), PolicyDecision::Rejected);
    assert_eq!(p.allows(ip("1.2.3.4"), 81), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("1.2.3.5"), 80), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("1.2.4.1"), 80), PolicyDecision::Rejected);
    // No IPv6 rule matches ::1, so it is accepted by default, as in C.
    assert_eq!(p.allows(ip("::1"), 80), PolicyDecision::Accepted);
    assert_eq!(p.allows(ip("2001:db8::1"), 80), PolicyDecision::Rejected);
    // Port 0 is never allowed.
    assert_eq!(p.allows(ip("1.2.3.5"), 0), PolicyDecision::Rejected);
    // An IPv4 rule never matches an IPv4-mapped IPv6 address (C compares exactly).
    assert_eq!(p.allows(ip("::ffff:1.2.4.1"), 80), PolicyDecision::Accepted);
}

#[test]
fn unknown_address_decisions() {
    let d = |s: &str, port| {
        ExitPolicy::from_rules(&rules(s), false).allows_port_for_unknown_address(port)
    };
    use PolicyDecision::*;
    assert_eq!(d("accept *:80, reject *:*", 80), Accepted);
    assert_eq!(d("accept *:80, reject *:*", 81), Rejected);
    assert_eq!(d("reject 1.2.3.4:80, accept *:80", 80), ProbablyAccepted);
    assert_eq!(d("accept 1.2.3.4:80, reject *:*", 80), ProbablyRejected);
    assert_eq!(d("reject 1.2.3.4:80", 80), ProbablyAccepted);
    assert_eq!(d("accept 1.2.3.4:80", 80), Accepted);
    assert_eq!(d("reject 1.2.3.4:80", 81), Accepted);
    assert_eq!(d("reject *:*", 0), Rejected);
    assert!(ProbablyAccepted.may_accept() && !ProbablyRejected.may_accept());
}

#[test]
fn summary_threshold_is_more_than_two_slash8s() {
    let s = |txt: &str| {
        ExitPolicy::from_rules(&rules(txt), false)
            .summary_v4()
            .to_string()
    };
    assert_eq!(
        s("reject 1.0.0.0/8:80, reject 2.0.0.0/8:80, accept *:*"),
        "accept 1-65535"
    );
    assert_eq!(
        s("reject 1.0.0.0/8:80, reject 2.0.0.0/8:80, reject 3.0.0.1:80, accept *:*"),
        "reject 80"
    );
    assert_eq!(s("reject 2.0.0.0/7:80-81, accept *:*"), "accept 1-65535");
    assert_eq!(s("reject 4.0.0.0/6:80-81, accept *:*"), "reject 80-81");
    // Rejects of C's exact private nets are ignored; the same net written differently is
    // not recognised as private.
    assert_eq!(
        s("reject private:*, reject 10.0.0.0/8:80, accept *:*"),
        "accept 1-65535"
    );
    assert_eq!(
        s("reject 10.0.0.0/8:80, reject 127.0.0.0/8:80, reject 10.0.0.1/8:80, reject 11.0.0.0/8:80, reject 12.0.0.0/8:80, accept *:*"),
        "reject 80"
    );
    // Accepts narrower than `*` do not count.
    assert_eq!(s("accept 1.0.0.0/1:*, reject *:*"), "reject 1-65535");
    // A port accepted before the rejects add up stays accepted.
    assert_eq!(s("accept *:22, reject *:*"), "accept 22");
    // Whichever list is shorter wins; ties go to accept.
    assert_eq!(s("accept *:80, accept *:443, reject *:*"), "accept 80,443");
    assert_eq!(s("reject *:1-79, accept *:80, reject *:*"), "accept 80");
    assert_eq!(s("reject *:1, accept *:*"), "reject 1");
    assert_eq!(s("accept *:1, reject *:*"), "accept 1");
}

#[test]
fn summary_too_long_is_truncated_like_c() {
    let mut txt = String::new();
    for port in (10000..12000).step_by(2) {
        txt.push_str(&format!("accept *:{port},"));
    }
    txt.push_str("reject *:*");
    let s = ExitPolicy::from_rules(&rules(&txt), false).summary_v4();
    assert!(s.accept);
    // C cuts the accept list at the last comma at or before 993 bytes: 165 five-digit
    // ports (989 bytes).
    assert_eq!(s.ranges.len(), 165);
    assert_eq!(s.ranges.last().unwrap().min(), 10328);
    assert!(s.to_string().len() <= 1000);
}

#[test]
fn exit_flag_eligibility() {
    let e = |txt: &str| ExitPolicy::from_rules(&rules(txt), false).is_exit_flag_eligible();
    assert!(e("accept *:80, accept *:443, reject *:*"));
    assert!(e("accept 8.0.0.0/8:80, accept 8.0.0.0/8:443, reject *:*"));
    assert!(!e("accept 8.0.0.0/9:*, reject *:*"));
    assert!(!e("accept *:80, reject *:*"));
    assert!(!e("reject *:443, accept *:*"));
    // A reject of any part of a /8 spoils that /8 for later accepts...
    assert!(!e("reject 8.0.0.1:80, accept 8.0.0.0/8:*, reject *:*"));
    // ...but another /8 still counts.
    assert!(e("reject 8.0.0.1:80, accept 8.0.0.0/7:*, reject *:*"));
    // Internal /8s only count where the authority allows private addresses.
    let private = ExitPolicy::from_rules(&rules("accept 10.0.0.0/8:*, reject *:*"), false);
    assert!(!private.is_exit_flag_eligible());
    assert!(private.is_general_exit(true));
    // IPv6 rules never help.
    assert!(!e("accept *6:*, reject *4:*"));
    // Built policies.
    assert!(exit_with(Some("accept *:80,accept *:443,reject *:*"))
        .build()
        .is_exit_flag_eligible());
    assert!(!exit_with(Some("accept *:443,reject *:*"))
        .build()
        .is_exit_flag_eligible());
}

#[test]
fn ignored_accept6_items_do_not_count() {
    let parsed = parse_policy_list("accept6 1.2.3.4:80, accept *:80").unwrap();
    assert_eq!(parsed.ignored.len(), 1);
    let p = ExitPolicy::from_rules(&parsed.rules, false);
    assert_eq!(p.allows(ip("1.2.3.4"), 80), PolicyDecision::Accepted);
    assert_eq!(p.ipv4_rules().count(), 1);
}

/// Builder for the torrc options used in the C comparison below; the relay's address is
/// 203.0.113.5 as in those runs.
fn builder_from_torrc(options: &[&str]) -> ExitPolicyBuilder {
    let mut b = ExitPolicyBuilder {
        published_addresses: vec![ip("203.0.113.5")],
        ..ExitPolicyBuilder::default()
    };
    for opt in options {
        let (k, v) = opt.split_once(' ').unwrap();
        match k {
            "ExitRelay" => {
                b.exit_relay = if v == "1" {
                    ExitRelay::Enabled
                } else {
                    ExitRelay::Disabled
                }
            }
            "IPv6Exit" => b.ipv6_exit = v == "1",
            "ReducedExitPolicy" => b.reduced_exit_policy = v == "1",
            "ExitPolicyRejectPrivate" => b.reject_private = v == "1",
            "ExitPolicy" => b.exit_policy = Some(rules(v)),
            "ORPort" => b.published_addresses.push(ip("2001:db8::5")),
            _ => panic!("unhandled option {k}"),
        }
    }
    b
}

/// Both families in the form C's `GETINFO exit-policy/full` writes
/// (`policy_write_item(.., format_for_desc = 1)`).
fn c_style_full_policy(p: &ExitPolicy) -> (String, String) {
    if p.is_reject_star() {
        return ("reject *:*".into(), String::new());
    }
    let v4: Vec<String> = p
        .ipv4_rules()
        .map(|r| r.to_string().replacen("*4", "*", 1))
        .collect();
    let v6: Vec<String> = p
        .ipv6_rules()
        .map(|r| {
            r.to_string()
                .replacen("accept ", "accept6 ", 1)
                .replacen("reject ", "reject6 ", 1)
                .replacen("*6", "*", 1)
        })
        .collect();
    (v4.join("\n"), v6.join("\n"))
}

/// Vectors from Debian's tor 0.4.9.11, run offline in an isolated network namespace with
/// `Address 203.0.113.5`, queried with `GETINFO exit-policy/full` (lines split by family;
/// C interleaves them, but families never interact).
#[test]
fn matches_c_tor_0_4_9_11_output() {
    let cases: &[(&[&str], &str, &str)] = &[
    // c11: ExitPolicy reject private:80, accept [::ffff:1.2.3.4]/16:*, reject6 [fc00::]/7:*, accept *4:22 | IPv6Exit 1
    (
        &["ExitPolicy reject private:80, accept [::ffff:1.2.3.4]/16:*, reject6 [fc00::]/7:*, accept *4:22", "IPv6Exit 1"],
        "reject 0.0.0.0/8:*\nreject 169.254.0.0/16:*\nreject 127.0.0.0/8:*\nreject 192.168.0.0/16:*\nreject 10.0.0.0/8:*\nreject 172.16.0.0/12:*\nreject 203.0.113.5:*\nreject *:25\nreject *:119\nreject *:135-139\nreject *:445\nreject *:563\nreject *:1214\nreject *:4661-4666\nreject *:6346-6429\nreject *:6699\nreject *:6881-6999\naccept *:*",
        "reject6 [::]/8:*\nreject6 [fc00::]/7:*\nreject6 [fe80::]/10:*\nreject6 [fec0::]/10:*\nreject6 [ff00::]/8:*\nreject6 *:25\nreject6 *:119\nreject6 *:135-139\nreject6 *:445\nreject6 *:563\nreject6 *:1214\nreject6 *:4661-4666\nreject6 *:6346-6429\nreject6 *:6699\nreject6 *:6881-6999\naccept6 *:*",
    ),
    // c16: ExitPolicy accept 8.0.0.0/8:*, reject 8.1.0.0/16:80, accept6 [2001:db8::]/48:*, reject6 [2001:db8::1]:80 | IPv6Exit 1
    (
        &["ExitPolicy accept 8.0.0.0/8:*, reject 8.1.0.0/16:80, accept6 [2001:db8::]/48:*, reject6 [2001:db8::1]:80", "IPv6Exit 1"],
        "reject 0.0.0.0/8:*\nreject 169.254.0.0/16:*\nreject 127.0.0.0/8:*\nreject 192.168.0.0/16:*\nreject 10.0.0.0/8:*\nreject 172.16.0.0/12:*\nreject 203.0.113.5:*\naccept 8.0.0.0/8:*\nreject *:25\nreject *:119\nreject *:135-139\nreject *:445\nreject *:563\nreject *:1214\nreject *:4661-4666\nreject *:6346-6429\nreject *:6699\nreject *:6881-6999\naccept *:*",
        "reject6 [::]/8:*\nreject6 [fc00::]/7:*\nreject6 [fe80::]/10:*\nreject6 [fec0::]/10:*\nreject6 [ff00::]/8:*\naccept6 [2001:db8::]/48:*\nreject6 *:25\nreject6 *:119\nreject6 *:135-139\nreject6 *:445\nreject6 *:563\nreject6 *:1214\nreject6 *:4661-4666\nreject6 *:6346-6429\nreject6 *:6699\nreject6 *:6881-6999\naccept6 *:*",
    ),
    // c18: IPv6Exit 1 | ORPort [2001:db8::5]:9001 NoListen | ExitPolicy accept6 [2001:db8::]/32:*, reject [::ffff:0.0.0.0]/96:*
    (
        &["IPv6Exit 1", "ORPort [2001:db8::5]:9001 NoListen", "ExitPolicy accept6 [2001:db8::]/32:*, reject [::ffff:0.0.0.0]/96:*"],
        "reject 0.0.0.0/8:*\nreject 169.254.0.0/16:*\nreject 127.0.0.0/8:*\nreject 192.168.0.0/16:*\nreject 10.0.0.0/8:*\nreject 172.16.0.0/12:*\nreject 203.0.113.5:*\nreject *:25\nreject *:119\nreject *:135-139\nreject *:445\nreject *:563\nreject *:1214\nreject *:4661-4666\nreject *:6346-6429\nreject *:6699\nreject *:6881-6999\naccept *:*",
        "reject6 [::]/8:*\nreject6 [fc00::]/7:*\nreject6 [fe80::]/10:*\nreject6 [fec0::]/10:*\nreject6 [ff00::]/8:*\nreject6 [2001:db8::5]:*\naccept6 [2001:db8::]/32:*\nreject6 *:25\nreject6 *:119\nreject6 *:135-139\nreject6 *:445\nreject6 *:563\nreject6 *:1214\nreject6 *:4661-4666\nreject6 *:6346-6429\nreject6 *:6699\nreject6 *:6881-6999\naccept6 *:*",
    ),
    // c19: ExitPolicy reject 1.2.3.4, accept *:443, reject 5.6.7.8/30:443, accept 5.0.0.0/8:* | ExitPolicyRejectPrivate 0
    (
        &["ExitPolicy reject 1.2.3.4, accept *:443, reject 5.6.7.8/30:443, accept 5.0.0.0/8:*", "ExitPolicyRejectPrivate 0"],
        "reject 1.2.3.4:*\naccept 5.0.0.0/8:*\nreject *:25\nreject *:119\nreject *:135-139\nreject *:445\nreject *:563\nreject *:1214\nreject *:4661-4666\nreject *:6346-6429\nreject *:6699\nreject *:6881-6999\naccept *:*",
        "reject6 *:*",
    ),
    ];
    for (options, want_v4, want_v6) in cases {
        let (v4, v6) = c_style_full_policy(&builder_from_torrc(options).build());
        assert_eq!(&v4, want_v4, "{options:?}");
        assert_eq!(&v6, want_v6, "{options:?}");
    }
}
