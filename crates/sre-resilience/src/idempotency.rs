//! Stable idempotency keys.
//!
//! A key is derived from the content that makes a request the same request, never from a
//! random value or a clock, so every replica and every retry derives the same key.

use sha2::{Digest, Sha256};

/// Derives `<namespace>:<32 hex>` from `parts`. Each part is length-prefixed before
/// hashing, so `["ab","c"]` and `["a","bc"]` differ.
pub fn derive_key(namespace: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("{namespace}:{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stable_and_namespaced() {
        let a = derive_key("am", &["00260c6d6cda79af", "firing", "2026-11-27T03:38:53.744495Z"]);
        assert_eq!(a, derive_key("am", &["00260c6d6cda79af", "firing", "2026-11-27T03:38:53.744495Z"]));
        assert!(a.starts_with("am:"));
        assert_eq!(a.len(), 3 + 32);
        assert_ne!(a, derive_key("am", &["00260c6d6cda79af", "resolved", "2026-11-27T03:38:53.744495Z"]));
        assert_ne!(a, derive_key("xx", &["00260c6d6cda79af", "firing", "2026-11-27T03:38:53.744495Z"]));
    }

    proptest! {
        #[test]
        fn splitting_the_same_text_differently_gives_other_keys(
            text in "[a-z0-9]{2,16}", i in 0usize..16, j in 0usize..16,
        ) {
            let (i, j) = (i % text.len(), j % text.len());
            prop_assume!(i != j);
            let (a1, b1) = text.split_at(i);
            let (a2, b2) = text.split_at(j);
            prop_assert_ne!(derive_key("n", &[a1, b1]), derive_key("n", &[a2, b2]));
        }
    }
}
