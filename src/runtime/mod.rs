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
