//! The operator runtime: the machinery the controllers share, which knows no
//! domain type (src/layering.rs checks that it imports nothing of the domain).

pub mod admin_server;
pub mod announce;
pub mod catch_up;
pub mod controller;
pub mod kube;
pub mod leadership;
pub mod metrics;
#[cfg(test)]
pub mod mock;
pub mod retry;
pub mod telemetry;
pub mod tls;

use ::kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};

/// Which object: its namespace (empty for a cluster-scoped one) and name.
/// The one key every cache, queue and record of registrar uses for an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key { namespace: namespace.into(), name: name.into() }
    }

    /// The request for a reconcile of this object.
    pub fn to_ref<K>(&self) -> ObjectRef<K>
    where
        K: Resource,
        K::DynamicType: Default,
    {
        let object = ObjectRef::new(&self.name);
        if self.namespace.is_empty() { object } else { object.within(&self.namespace) }
    }
}

/// The key of `object`.
pub fn key_of(object: &impl Resource) -> Key {
    Key { namespace: object.namespace().unwrap_or_default(), name: object.name_any() }
}

impl<K: Resource> From<&ObjectRef<K>> for Key {
    fn from(object: &ObjectRef<K>) -> Self {
        Key { namespace: object.namespace.clone().unwrap_or_default(), name: object.name.clone() }
    }
}

/// `namespace/name`, as people write it (`name` alone when cluster-scoped).
impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// An object's UID in 16 bytes instead of a 36-byte string and its heap
/// allocation, for maps that hold one per app. The apiserver's UIDs are UUIDs
/// and are kept exactly, ordered as their text; anything else (never from a
/// real apiserver) is kept as a digest of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(u128);

impl Uid {
    pub fn of(uid: &str) -> Uid {
        Uid(parse_uuid(uid).unwrap_or_else(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(uid.as_bytes());
            let mut first = [0; 16];
            first.copy_from_slice(&digest[..16]);
            u128::from_be_bytes(first)
        }))
    }
}

impl From<&str> for Uid {
    fn from(uid: &str) -> Uid {
        Uid::of(uid)
    }
}

/// A UUID in its canonical lowercase form (8-4-4-4-12 hex digits).
fn parse_uuid(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(digit);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_kept_exactly_and_in_order() {
        let a = "5f0c2b7e-9d41-4c3a-8e2f-7b6a1d9c0e34";
        let b = "5f0c2b7e-9d41-4c3a-8e2f-7b6a1d9c0e35";
        let c = "a0000000-0000-4000-8000-000000000000";
        assert_eq!(Uid::of(a), Uid::of(a));
        assert_ne!(Uid::of(a), Uid::of(b));
        assert!(Uid::of(a) < Uid::of(b) && Uid::of(b) < Uid::of(c), "ordered as the text");
        assert_eq!(Uid::of(a).0, 0x5f0c2b7e_9d41_4c3a_8e2f_7b6a1d9c0e34);
        // Not a canonical UUID: a digest, still one value per text.
        for other in ["uid-1", "", "5F0C2B7E-9D41-4C3A-8E2F-7B6A1D9C0E34", "5f0c2b7e+9d41-4c3a-8e2f-7b6a1d9c0e34"] {
            assert_eq!(Uid::of(other), Uid::of(other));
            assert_ne!(Uid::of(other), Uid::of(a), "{other}");
        }
        assert_ne!(Uid::of("uid-1"), Uid::of("uid-2"));
    }
}
