//! Job ids and claim tokens: 8 random bytes as 16 lowercase hex characters,
//! the reference's format.

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A fresh random id or token.
pub(crate) fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_sixteen_lowercase_hex_characters() {
        for _ in 0..1000 {
            let id = super::random_hex();
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        assert_ne!(super::random_hex(), super::random_hex());
    }
}
