//! Object names (§1.5, §3.4): the VAP, the binding (with the 253-character rule) and the
//! pre-v3.23 legacy binding name.

use crate::sha256;

/// The longest name a Kubernetes object may have (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// How many hex characters of the sha256 end a shortened binding name.
const HASH_LEN: usize = 8;

/// `gatekeeper-<template name>`: the VAP's name. No length check here; the transform rejects
/// names over 253 characters.
pub fn policy_name(template_name: &str) -> String {
    ["gatekeeper-", template_name].concat()
}

/// `gatekeeper-<lower(kind)>`: the binding's `spec.policyName`. It equals [`policy_name`]
/// because the template name must be `lower(kind)`.
///
/// Lowercasing is ASCII-only: a CRD kind must be ASCII (the API server requires its
/// lowercase to be a DNS-1035 label), and the Unicode tables would cost ~15 KB of wasm.
pub fn binding_policy_name(kind: &str) -> String {
    ["gatekeeper-", &kind.to_ascii_lowercase()].concat()
}

/// The binding name `gatekeeper-<lower(kind)>-<constraint name>`, shortened when longer
/// than 253 bytes exactly like Gatekeeper's `GetVAPBindingName`:
///
/// 1. `h` = the first 8 hex characters of sha256(full name);
/// 2. keep the first 244 (= 253 − 9) bytes of the full name (for a non-ASCII name, the
///    longest prefix of whole characters that fits; Kubernetes names are ASCII);
/// 3. strip trailing `-` and `.`;
/// 4. append `-h`.
///
/// The result is at most 253 bytes and ends in `-<8 hex>`.
pub fn binding_name(kind: &str, constraint_name: &str) -> String {
    binding_name_for_lower_kind(&kind.to_ascii_lowercase(), constraint_name)
}

/// [`binding_name`] for a kind that is already lowercase (computed once per plan).
pub fn binding_name_for_lower_kind(lower_kind: &str, constraint_name: &str) -> String {
    let full = ["gatekeeper-", lower_kind, "-", constraint_name].concat();
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let hash = sha256::hex_digest(full.as_bytes());
    let hash = hash.get(..HASH_LEN).unwrap_or(&hash);
    let prefix = char_prefix(&full, MAX_NAME_LEN - HASH_LEN - 1);
    let prefix = prefix.trim_end_matches(['-', '.']);
    [prefix, "-", hash].concat()
}

/// The pre-v3.23 binding name `gatekeeper-<constraint name>`, or `None` when it would be
/// longer than 253 bytes (Gatekeeper skips legacy cleanup then).
pub fn legacy_binding_name(constraint_name: &str) -> Option<String> {
    let name = ["gatekeeper-", constraint_name].concat();
    (name.len() <= MAX_NAME_LEN).then_some(name)
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
fn char_prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_plain() {
        assert_eq!(
            policy_name("k8srequiredlabels"),
            "gatekeeper-k8srequiredlabels"
        );
        assert_eq!(
            binding_policy_name("K8sRequiredLabels"),
            "gatekeeper-k8srequiredlabels"
        );
        assert_eq!(
            binding_name("K8sRequiredLabels", "ns-must-have-owner"),
            "gatekeeper-k8srequiredlabels-ns-must-have-owner"
        );
        assert_eq!(
            legacy_binding_name("ns-must-have-owner").as_deref(),
            Some("gatekeeper-ns-must-have-owner")
        );
    }

    #[test]
    fn names_of_distinct_kinds_do_not_collide() {
        // Acceptance test 15.
        assert_eq!(binding_name("A", "foo"), "gatekeeper-a-foo");
        assert_eq!(binding_name("B", "foo"), "gatekeeper-b-foo");
    }

    #[test]
    fn exactly_253_is_kept() {
        // "gatekeeper-k-" is 13 bytes.
        let name = "x".repeat(240);
        let b = binding_name("K", &name);
        assert_eq!(b.len(), 253);
        assert_eq!(b, format!("gatekeeper-k-{name}"));
        let name = "x".repeat(241);
        assert_eq!(binding_name("K", &name).len(), 253);
        assert_ne!(binding_name("K", &name), format!("gatekeeper-k-{name}"));
    }

    #[test]
    fn long_names_are_truncated_and_hashed() {
        // Acceptance test 14. The constraint name is 250 'a's: the full name is 279 bytes.
        let name = "a".repeat(250);
        let full = format!("gatekeeper-k8srequiredlabels-{name}");
        let b = binding_name("K8sRequiredLabels", &name);
        assert!(b.len() <= MAX_NAME_LEN);
        let (prefix, hash) = b.rsplit_once('-').unwrap();
        assert_eq!(hash.len(), 8);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(prefix, &full[..244]);
        assert_eq!(hash, &sha256::hex_digest(full.as_bytes())[..8]);
        // Stable.
        assert_eq!(binding_name("K8sRequiredLabels", &name), b);
        // Hand-checked with coreutils:
        // printf 'gatekeeper-k8srequiredlabels-%s' "$(printf 'a%.0s' $(seq 250))" | sha256sum
        // → d20b6ab79a6a2cd059f7c7e03e79b71dab400b4b942dab369af0659bc405b4f9
        assert_eq!(hash, "d20b6ab7");
        assert_eq!(legacy_binding_name(&name), None);
    }

    #[test]
    fn truncation_strips_trailing_dashes_and_dots() {
        // Characters 232..244 of the full name are '-' and '.', so they are stripped.
        let name = format!("{}-.-.-.-.-.-.{}", "b".repeat(219), "c".repeat(40));
        let full = format!("gatekeeper-k-{name}");
        assert_eq!(&full[232..244], "-.-.-.-.-.-.");
        let b = binding_name("K", &name);
        let hash = &sha256::hex_digest(full.as_bytes())[..8];
        assert_eq!(b, format!("gatekeeper-k-{}-{hash}", "b".repeat(219)));
        assert!(b.len() < 253);
    }

    #[test]
    fn non_ascii_names_do_not_panic() {
        let name = "é".repeat(200);
        let b = binding_name("K", &name);
        assert!(b.len() <= MAX_NAME_LEN);
        assert!(b.ends_with(&sha256::hex_digest(format!("gatekeeper-k-{name}").as_bytes())[..8]));
    }
}
