//! Compact forms of what the caches hold for every app: an AppRegistration is
//! kept as its JSON compressed with zstd against a dictionary of a typical app,
//! and the metadata of its Secret the same way; both are decoded when read.
//!
//! Decoded, an AppRegistration is a tree of k8s-openapi structs several
//! times the size of its JSON (every `ObjectMeta` inline, every map a B-tree
//! node even with one entry, five conditions of five strings each, the
//! accepted spec a second copy of the spec). Its JSON is mostly field names,
//! condition messages and timestamps an app shares with every other; against a
//! dictionary of a typical app what remains is mostly what is unique to it
//! (its UID, hashes, seals, names). A read costs a decompression and a JSON
//! decode; reconciles read an app once, the registry once per request. The
//! sizes and costs measured are in docs/benchmarks.md ("Memory") and
//! docs/adr/0003-packed-caches.md.
//!
//! The dictionaries are samples captured from a running registrar
//! (`src/cluster/packed/*.json`); a different app still packs and unpacks exactly, it
//! only compresses less. A unit test notices when they go stale.

use std::{
    borrow::Cow,
    cell::RefCell,
    sync::{LazyLock, OnceLock},
};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::Resource;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use zstd::{
    bulk::{Compressor, Decompressor},
    dict::{DecoderDictionary, EncoderDictionary},
};

use crate::api::AppRegistration;

/// zstd's level: on an app's JSON, higher levels cost more time for a few bytes.
const LEVEL: i32 = 9;

/// The largest object the apiserver stores (etcd's request limit), the most a
/// packed object can unpack to.
const LARGEST: usize = 3 * 1024 * 1024;

/// A dictionary, prepared once for compressing and once for decompressing.
struct Dictionary {
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

impl Dictionary {
    fn new(sample: &[u8]) -> Self {
        Dictionary { encoder: EncoderDictionary::copy(sample, LEVEL), decoder: DecoderDictionary::copy(sample) }
    }
}

/// Which dictionary a value is packed against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    App,
    SecretMeta,
}

static APP: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::new(include_bytes!("packed/app.json")));
static SECRET_META: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::new(include_bytes!("packed/secret-meta.json")));

fn dictionary(kind: Kind) -> &'static Dictionary {
    match kind {
        Kind::App => &APP,
        Kind::SecretMeta => &SECRET_META,
    }
}

/// One compression and one decompression context per thread and dictionary
/// (a context holds a few hundred KiB of tables; creating one per call would
/// cost more than the work).
struct Contexts {
    compressors: [Option<Compressor<'static>>; 2],
    decompressors: [Option<Decompressor<'static>>; 2],
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> =
        const { RefCell::new(Contexts { compressors: [None, None], decompressors: [None, None] }) };
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::App => 0,
        Kind::SecretMeta => 1,
    }
}

/// `value` as compressed JSON.
pub fn pack<T: Serialize>(kind: Kind, value: &T) -> Box<[u8]> {
    let json = serde_json::to_vec(value).expect("a Kubernetes object serializes to JSON");
    CONTEXTS.with_borrow_mut(|contexts| {
        let compressor = match &mut contexts.compressors[slot(kind)] {
            Some(compressor) => compressor,
            empty => empty.insert(
                Compressor::with_prepared_dictionary(&dictionary(kind).encoder)
                    .expect("zstd allocates a compression context"),
            ),
        };
        compressor.compress(&json).expect("zstd compresses into a buffer of its own bound").into_boxed_slice()
    })
}

/// What [`pack`] packed, decoded.
pub fn unpack<T: DeserializeOwned>(kind: Kind, packed: &[u8]) -> T {
    let json = CONTEXTS.with_borrow_mut(|contexts| {
        let decompressor = match &mut contexts.decompressors[slot(kind)] {
            Some(decompressor) => decompressor,
            empty => empty.insert(
                Decompressor::with_prepared_dictionary(&dictionary(kind).decoder)
                    .expect("zstd allocates a decompression context"),
            ),
        };
        decompressor.decompress(packed, LARGEST).expect("what this process packed unpacks")
    });
    serde_json::from_slice(&json).expect("what this process packed decodes")
}

/// An AppRegistration as the app cache holds it: the object packed (with what
/// the watches drop before caching anything) and the two facts read of every
/// app on a scan.
///
/// kube's cache keys each object by the metadata of the one it is given and
/// keeps a clone of it ([`kube::runtime::reflector::store::Writer`]). An
/// `ObjectMeta` takes 344 bytes even empty, more than the packed app, so a
/// clone does not copy it: it decodes it from the packed app the first time
/// it is asked for ([`Resource::meta`]). Both copies answer the same; the
/// cached one holds a pointer until then. Scans read what is kept unpacked
/// ([`PackedApp::deleting`], [`PackedApp::ready`]) or the cache's keys, and a
/// reconcile reads [`PackedApp::unpack`], so the cached copies stay small.
#[derive(Debug)]
pub struct PackedApp {
    /// Set at once in the copy made from a watch event, on first read in a clone.
    metadata: OnceLock<Box<ObjectMeta>>,
    packed: Box<[u8]>,
    deleting: bool,
    ready: Option<bool>,
}

/// A copy whose metadata is decoded when first read (see [`PackedApp`]).
impl Clone for PackedApp {
    fn clone(&self) -> Self {
        PackedApp { metadata: OnceLock::new(), packed: self.packed.clone(), deleting: self.deleting, ready: self.ready }
    }
}

impl PackedApp {
    pub fn new(app: &AppRegistration) -> Self {
        let meta = &app.metadata;
        let ready = app.status.as_ref().and_then(|s| s.ready());
        PackedApp {
            metadata: OnceLock::from(Box::new(meta.clone())),
            packed: pack(Kind::App, app),
            deleting: meta.deletion_timestamp.is_some(),
            ready,
        }
    }

    /// The AppRegistration, decoded.
    pub fn unpack(&self) -> AppRegistration {
        unpack(Kind::App, &self.packed)
    }

    /// Whether it is being deleted.
    pub fn deleting(&self) -> bool {
        self.deleting
    }

    /// Its Ready condition (`None`: none yet).
    pub fn ready(&self) -> Option<bool> {
        self.ready
    }

    /// Bytes held for it beyond the struct itself.
    #[cfg(test)]
    fn packed_len(&self) -> usize {
        self.packed.len()
    }

    /// Whether its metadata is decoded (always in a watch event's copy; in a
    /// cached copy, once read).
    #[cfg(test)]
    pub(super) fn holds_metadata(&self) -> bool {
        self.metadata.get().is_some()
    }
}

impl<'de> Deserialize<'de> for PackedApp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut app = AppRegistration::deserialize(deserializer)?;
        super::kept::app(&mut app);
        Ok(PackedApp::new(&app))
    }
}

impl Resource for PackedApp {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AppRegistration::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        AppRegistration::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        AppRegistration::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        AppRegistration::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.metadata.get_or_init(|| Box::new(self.unpack().metadata))
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.meta();
        self.metadata.get_mut().expect("decoded just now")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_app() -> AppRegistration {
        serde_json::from_slice(include_bytes!("packed/app.json")).expect("the sample is an AppRegistration")
    }

    /// Another app than the sample: different names, UID, hashes and times.
    fn another_app() -> AppRegistration {
        let json = String::from_utf8(include_bytes!("packed/app.json").to_vec()).unwrap();
        let mut app: AppRegistration = serde_json::from_str(&json).unwrap();
        app.metadata.name = Some("payroll-portal".into());
        app.metadata.namespace = Some("team-payroll".into());
        app.metadata.uid = Some("5f0c2b7e-9d41-4c3a-8e2f-7b6a1d9c0e34".into());
        app.metadata.resource_version = Some("918273".into());
        let status = app.status.as_mut().unwrap();
        status.client_id = Some("b7d5e0c4-2f6a-4e8b-9a31-c8f2d4e6a1b0".into());
        status.client_id_seal = Some("v1.q9Xr2mK7pL4sT8wZ1cV6bN3hJ5gF0dA2eR7yU4iO9kM".into());
        status.secret_hash = Some(
            "$argon2id$v=19$m=256,t=1,p=1$Wm9tYmllc0FyZUNvbWluZw$7q4vJk2mXo9sR3tY1uB5nC8dE0fG6hI4jK2lM9nO1pQ".into(),
        );
        status.secret_fingerprint =
            Some("sha256:9c2e4a7f1b3d5e8a0c6f2b4d7e9a1c3f5b8d0e2a4c6f8b1d3e5a7c9f0b2d4e6".into());
        app
    }

    #[test]
    fn an_app_packs_and_unpacks_exactly() {
        for app in [sample_app(), another_app(), AppRegistration::new("bare", Default::default())] {
            let packed = PackedApp::new(&app);
            let back = packed.unpack();
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&app).unwrap());
            assert_eq!(packed.meta(), &app.metadata);
            let copy = packed.clone();
            assert!(!copy.holds_metadata(), "a clone decodes its metadata when first read");
            assert_eq!(copy.meta(), &app.metadata, "and then answers as the original does");
            assert!(copy.holds_metadata());
        }
    }

    /// kube's cache keys each app by the metadata of the object it is given
    /// and keeps a clone, which holds no decoded metadata until it is read:
    /// found by name, deleted by name, small.
    #[test]
    fn the_cache_keeps_an_app_without_its_metadata_and_finds_it_by_name() {
        use kube::runtime::{reflector::ObjectRef, watcher::Event};
        assert!(std::mem::size_of::<PackedApp>() <= 40, "the cached struct stays small");
        let (store, mut writer) = kube::runtime::reflector::store::<PackedApp>();
        let app = another_app();
        let name = ObjectRef::new("payroll-portal").within("team-payroll");
        for event in [Event::Init, Event::InitApply(PackedApp::new(&sample_app())), Event::InitDone] {
            writer.apply_watcher_event(&event);
        }
        writer.apply_watcher_event(&Event::Apply(PackedApp::new(&app)));
        assert_eq!(store.state().len(), 2);
        let cached = store.get(&name).expect("the cache finds the app by name");
        assert!(!cached.holds_metadata(), "the cached copy holds no decoded metadata");
        assert_eq!(serde_json::to_value(cached.unpack()).unwrap(), serde_json::to_value(&app).unwrap());
        assert!(!cached.holds_metadata(), "reading the app does not keep its metadata");
        assert_eq!(cached.meta(), &app.metadata, "asked for, it is the app's");
        writer.apply_watcher_event(&Event::Delete(PackedApp::new(&app)));
        assert!(store.get(&name).is_none(), "a deleted app leaves the cache");
        assert_eq!(store.state().len(), 1);
    }

    #[test]
    fn a_packed_app_knows_whether_it_is_ready_and_deleting() {
        let app = sample_app();
        let packed = PackedApp::new(&app);
        assert_eq!(packed.ready(), Some(true));
        assert!(!packed.deleting());
        let mut deleting = app.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        deleting.status.as_mut().unwrap().conditions.clear();
        let packed = PackedApp::new(&deleting);
        assert!(packed.deleting());
        assert_eq!(packed.ready(), None);
    }

    /// The dictionaries fit what registrar writes: an app other than the
    /// sample packs to a third of its JSON, a Secret's metadata to half. When this fails, capture a new
    /// sample (see src/cluster/packed/README.md).
    #[test]
    fn the_dictionaries_still_fit_what_registrar_writes() {
        let app = another_app();
        let json = serde_json::to_vec(&app).unwrap().len();
        let packed = PackedApp::new(&app).packed_len();
        eprintln!("app: {json} bytes of JSON packed to {packed}");
        assert!(packed * 3 <= json, "an app's {json} bytes of JSON packed to {packed}");

        let mut secret: ObjectMeta = serde_json::from_slice(include_bytes!("packed/secret-meta.json")).unwrap();
        let annotations = secret.annotations.as_mut().unwrap();
        annotations.insert("registrar.dev/client-id".into(), "b7d5e0c4-2f6a-4e8b-9a31-c8f2d4e6a1b0".into());
        annotations.insert("registrar.dev/seal".into(), "v1.q9Xr2mK7pL4sT8wZ1cV6bN3hJ5gF0dA2eR7yU4iO9kM".into());
        secret.labels.as_mut().unwrap().insert("registrar.dev/app".into(), "payroll-portal".into());
        let owner = &mut secret.owner_references.as_mut().unwrap()[0];
        owner.name = "payroll-portal".into();
        owner.uid = "5f0c2b7e-9d41-4c3a-8e2f-7b6a1d9c0e34".into();
        secret.resource_version = Some("918274".into());
        let json = serde_json::to_vec(&secret).unwrap().len();
        let packed = pack(Kind::SecretMeta, &secret).len();
        eprintln!("Secret metadata: {json} bytes of JSON packed to {packed}");
        assert!(packed * 2 <= json, "a Secret's {json} bytes of metadata packed to {packed}");
        let back: ObjectMeta = unpack(Kind::SecretMeta, &pack(Kind::SecretMeta, &secret));
        assert_eq!(back, secret);
    }
}
