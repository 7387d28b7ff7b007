//! Fuzz the torrc exit-policy parser and everything built from what it accepts.
//!
//! Checks: no panics on any input; accepted items print back to text that parses to the
//! same rule; building, evaluating, summarizing and writing descriptor lines never panic,
//! and descriptor lines never carry IPv6 rules.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fors::exit::policy::{
    parse_policy_item, parse_policy_list, ExitPolicy, ExitPolicyBuilder, ExitRelay, PolicyDecision,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    for item in text.split(',') {
        if let Ok(rule) = parse_policy_item(item) {
            let printed = rule.to_string();
            let again = parse_policy_item(&printed)
                .unwrap_or_else(|e| panic!("{printed:?} does not reparse: {e}"));
            assert_eq!(again, rule, "{printed:?}");
        }
    }

    let Ok(parsed) = parse_policy_list(text) else {
        return;
    };
    let flags = data.first().copied().unwrap_or(0);
    let builder = ExitPolicyBuilder {
        exit_relay: ExitRelay::Enabled,
        exit_policy: Some(parsed.rules.clone()),
        reject_private: flags & 1 != 0,
        reduced_exit_policy: flags & 2 != 0,
        ipv6_exit: flags & 4 != 0,
        reject_local_interfaces: flags & 8 != 0,
        published_addresses: vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5))],
        interface_addresses: vec![IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5))],
        ..ExitPolicyBuilder::default()
    };
    for policy in [
        builder.build(),
        ExitPolicy::from_rules(&parsed.rules, flags & 4 != 0),
    ] {
        let mut lines = String::new();
        policy.write_descriptor_lines(&mut lines);
        assert!(lines.ends_with('\n'));
        for line in lines.lines() {
            assert!(
                line.starts_with("accept ")
                    || line.starts_with("reject ")
                    || line.starts_with("ipv6-policy "),
                "{line:?}"
            );
            assert!(!line.contains('['), "IPv6 rule in descriptor: {line:?}");
        }
        assert!(policy.summary_v4().to_string().len() <= 1000);
        assert!(policy.summary_v6().to_string().len() <= 1000);
        let _ = policy.is_exit_flag_eligible();
        for port in [0u16, 1, 25, 80, 443, 65535] {
            let _ = policy.allows_port_for_unknown_address(port);
            for addr in [
                IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                let d = policy.allows(addr, port);
                assert!(matches!(
                    d,
                    PolicyDecision::Accepted | PolicyDecision::Rejected
                ));
            }
        }
        if policy.is_reject_star() {
            assert_eq!(lines.lines().next(), Some("reject *:*"));
        }
    }
});
