//! Cookies this replica has already verified, so a returning visitor's request costs a
//! comparison instead of an HMAC: the signature check was two SHA-256 blocks, the largest single
//! cost of a proxied read above the bare hop (callgrind, docs/BENCHMARKS.md, `lab bench bff`,
//! session 6).
//!
//! Only a cookie whose HMAC checked out is kept, byte for byte, and only a byte-identical cookie
//! is accepted from here, so what is accepted is exactly what the HMAC would accept with the key
//! this process holds for its whole life. The comparison is constant-time over the whole value
//! (a forged tag for a kept session id learns nothing from how long it took to be refused), and
//! a refused comparison goes on to the HMAC as before. The session id is kept beside its
//! cookie, so an accepted one is not parsed again.

use std::sync::{Mutex, PoisonError};

use super::SessionId;

use subtle::ConstantTimeEq;

/// Slots, one cookie each, chosen by the session id's first hex digits: a visitor keeps its
/// slot until another session lands on it, and then only pays the HMAC again. 1,024 × ~80 bytes;
/// the sessions active on one replica at a time rarely exceed it, and a miss is only slower.
const SLOTS: usize = 1_024;

/// A signed cookie value: 32 hex digits of id, `.`, 43 characters of base64url tag.
const SIGNED_LEN: usize = 32 + 1 + 43;

/// The verified cookies, a lock per slot (held for a copy or a comparison, never across an
/// await), so visitors on different slots never wait for each other.
pub(super) struct Verified(Box<[Mutex<Option<Kept>>]>);

/// A verified cookie, byte for byte, and the session it names.
struct Kept {
    cookie: [u8; SIGNED_LEN],
    id: SessionId,
}

impl Default for Verified {
    fn default() -> Self {
        Self((0..SLOTS).map(|_| Mutex::new(None)).collect())
    }
}

impl Verified {
    /// The session of exactly `cookie`, when it was verified before (and is still kept).
    pub(super) fn holds(&self, cookie: &[u8]) -> Option<SessionId> {
        let slot = self.slot(cookie)?;
        let kept = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = kept.as_ref()?;
        same(&kept.cookie, cookie).then(|| kept.id.clone())
    }

    /// Keeps `cookie`, whose signature has just been verified, and the session it names.
    pub(super) fn keep(&self, cookie: &[u8], id: &SessionId) {
        if let (Some(slot), Ok(bytes)) = (self.slot(cookie), cookie.try_into()) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Kept {
                cookie: bytes,
                id: id.clone(),
            });
        }
    }

    fn slot(&self, bytes: &[u8]) -> Option<&Mutex<Option<Kept>>> {
        if bytes.len() != SIGNED_LEN {
            return None;
        }
        // The id is random hex: its first three digits spread sessions evenly over the slots.
        let index = bytes[..3].iter().fold(0usize, |index, &b| {
            index << 4 | char::from(b).to_digit(16).map_or(0, |d| d as usize)
        });
        self.0.get(index % SLOTS)
    }
}

/// Whether a kept cookie and a presented one of the same length are equal, in time that does not
/// depend on where they differ: every byte's difference is OR-ed into one, with no branch until
/// the end. One pass the compiler can vectorise, where `subtle`'s byte slices compare each byte
/// behind an optimisation barrier (~10 instructions a byte, 4 % of a proxied read, callgrind).
fn same(kept: &[u8; SIGNED_LEN], presented: &[u8]) -> bool {
    if presented.len() != SIGNED_LEN {
        return false;
    }
    let mut difference = 0u8;
    for (a, b) in kept.iter().zip(presented) {
        difference |= a ^ b;
    }
    bool::from(difference.ct_eq(&0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_equality_of_the_whole_value_wherever_a_byte_differs() {
        let kept = [b'a'; SIGNED_LEN];
        assert!(same(&kept, &kept));
        for at in [0, SIGNED_LEN / 2, SIGNED_LEN - 1] {
            let mut other = kept;
            other[at] = b'b';
            assert!(!same(&kept, &other), "byte {at}");
        }
        assert!(!same(&kept, &kept[1..]));
        assert!(!same(&kept, b""));
    }
}
