//! Where the lake's objects live: a local folder (the default) or an object store named by URL
//! (`s3://bucket/prefix`, `gs://…`, `az://…`). Everything above this module speaks in *keys*
//! relative to the lake's root (`<table>/date=…/hour=…/<file>.parquet`).
//!
//! A put is whole or absent: in a local folder the object is written to a temporary file,
//! fsynced and renamed (so it survives power loss once `put` returns); an object store's PUT is
//! atomic by itself and durable once acknowledged. Credentials and endpoints of object stores
//! come from the usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and from the
//! sink's `storage_options`, which win.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

/// Errors of the lake's storage, naming the location and the object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lake location `{location}`: {reason}")]
    Open { location: String, reason: String },
    #[error("lake {location}: {op} `{key}`: {source}")]
    Object {
        location: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("lake {location}: {op} `{key}`: {source}")]
    Io {
        location: String,
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// One object of the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Key relative to the lake's root.
    pub key: String,
    pub size: u64,
}

/// The lake's storage.
#[derive(Debug, Clone)]
pub struct LakeStore {
    store: Arc<dyn ObjectStore>,
    /// The lake's root inside `store`.
    prefix: Path,
    /// The root folder of a local lake (writes go through fsync).
    local: Option<PathBuf>,
    /// The store's base URL (`file:///`, `s3://bucket`), for query engines.
    base: Url,
    location: String,
}

/// Environment variables passed to object stores, by URL scheme.
fn env_prefix(scheme: &str) -> Option<&'static str> {
    match scheme {
        "s3" | "s3a" => Some("AWS_"),
        "gs" => Some("GOOGLE_"),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Some("AZURE_"),
        _ => None,
    }
}

impl LakeStore {
    /// Opens the lake at `location`: a folder path (created if missing) or an object store URL,
    /// with `options` for the object store (`aws_endpoint`, `aws_region`, `aws_allow_http`, …).
    pub fn open(location: &str, options: &BTreeMap<String, String>) -> Result<Self, StoreError> {
        let fail = |reason: String| StoreError::Open {
            location: location.to_string(),
            reason,
        };
        if location.trim().is_empty() {
            return Err(fail("empty location".into()));
        }
        let url = match Url::parse(location) {
            // One letter would be a Windows drive, not a scheme.
            Ok(u) if u.scheme().len() > 1 && u.scheme() != "file" => Some(u),
            _ => None,
        };
        let Some(url) = url else {
            if !options.is_empty() {
                return Err(fail(
                    "storage_options are for object store URLs, not a local folder".into(),
                ));
            }
            let folder = location.strip_prefix("file://").unwrap_or(location);
            std::fs::create_dir_all(folder)
                .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
            let root = std::fs::canonicalize(folder)
                .map_err(|e| fail(format!("cannot resolve the folder: {e}")))?;
            let prefix = Path::from_absolute_path(&root).map_err(|e| fail(e.to_string()))?;
            return Ok(Self {
                store: Arc::new(LocalFileSystem::new()),
                prefix,
                local: Some(root),
                base: Url::parse("file:///").map_err(|e| fail(e.to_string()))?,
                location: location.to_string(),
            });
        };
        let Some(env) = env_prefix(url.scheme()) else {
            return Err(fail(format!(
                "unknown scheme `{}` (a folder path, or s3://, gs://, az:// URLs)",
                url.scheme()
            )));
        };
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(env))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (k, v) in options {
            let known = match env {
                "AWS_" => k
                    .to_ascii_lowercase()
                    .parse::<object_store::aws::AmazonS3ConfigKey>()
                    .is_ok(),
                "GOOGLE_" => k
                    .to_ascii_lowercase()
                    .parse::<object_store::gcp::GoogleConfigKey>()
                    .is_ok(),
                _ => k
                    .to_ascii_lowercase()
                    .parse::<object_store::azure::AzureConfigKey>()
                    .is_ok(),
            };
            if !known {
                return Err(fail(format!("storage_options: unknown key `{k}`")));
            }
            opts.insert(k.to_ascii_lowercase(), v.clone());
        }
        let (store, prefix) =
            object_store::parse_url_opts(&url, opts).map_err(|e| fail(e.to_string()))?;
        let mut base = url.clone();
        base.set_path("");
        base.set_query(None);
        Ok(Self {
            store: Arc::from(store),
            prefix,
            local: None,
            base,
            location: location.to_string(),
        })
    }

    /// The location as configured (for messages).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The local folder of a local lake.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local.as_deref()
    }

    /// The object store, its base URL and the lake's root inside it (for query engines).
    pub fn parts(&self) -> (Arc<dyn ObjectStore>, Url, Path) {
        (self.store.clone(), self.base.clone(), self.prefix.clone())
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    fn object_err(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError::Object {
            location: self.location.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Stores `bytes` as `key`, whole; returns once durable.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        if let Some(root) = &self.local {
            let file = root.join(key);
            let (dir, name) = match (file.parent(), file.file_name()) {
                (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
                _ => {
                    return Err(StoreError::Io {
                        location: self.location.clone(),
                        op: "write",
                        key: key.to_string(),
                        source: std::io::Error::other("not a file name"),
                    })
                }
            };
            return tokio::task::spawn_blocking(move || {
                trib_pipelines::state_file::write_atomic(&dir, &name, &bytes)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| StoreError::Io {
                location: self.location.clone(),
                op: "write",
                key: key.to_string(),
                source,
            });
        }
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.object_err("write", key, e))
    }

    /// The whole object `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let r = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.object_err("read", key, e))?;
        r.bytes().await.map_err(|e| self.object_err("read", key, e))
    }

    /// Removes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_err("delete", key, e)),
        }
    }

    /// Every object under `sub` (a key prefix ending at a folder, or "" for all), sorted by key.
    pub async fn list(&self, sub: &str) -> Result<Vec<Object>, StoreError> {
        if let Some(root) = &self.local {
            if !root.join(sub).exists() {
                return Ok(Vec::new());
            }
        }
        let base: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        let mut out: Vec<Object> = self
            .store
            .list(Some(&self.path(sub)))
            .map_ok(|m| Object {
                key: m
                    .location
                    .parts()
                    .skip(base.len())
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
            })
            .try_collect()
            .await
            .map_err(|e| self.object_err("list", sub, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The tables: the folders at the lake's root.
    pub async fn tables(&self) -> Result<Vec<String>, StoreError> {
        if let Some(root) = &self.local {
            if !root.exists() {
                return Ok(Vec::new());
            }
        }
        let r = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.object_err("list", "", e))?;
        let mut t: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
            .collect();
        t.sort();
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_lake_puts_lists_gets_and_deletes() {
        let d = tempfile::tempdir().unwrap();
        let s =
            LakeStore::open(&d.path().join("lake").to_string_lossy(), &BTreeMap::new()).unwrap();
        s.put(
            "web/date=2024-01-01/hour=00/a.parquet",
            Bytes::from_static(b"abc"),
        )
        .await
        .unwrap();
        s.put(
            "api/date=2024-01-01/hour=01/b.parquet",
            Bytes::from_static(b"de"),
        )
        .await
        .unwrap();
        assert_eq!(s.tables().await.unwrap(), ["api", "web"]);
        let all = s.list("").await.unwrap();
        assert_eq!(
            all,
            [
                Object {
                    key: "api/date=2024-01-01/hour=01/b.parquet".into(),
                    size: 2
                },
                Object {
                    key: "web/date=2024-01-01/hour=00/a.parquet".into(),
                    size: 3
                }
            ]
        );
        assert_eq!(s.list("web").await.unwrap().len(), 1);
        assert_eq!(s.list("nope").await.unwrap().len(), 0);
        assert_eq!(
            &s.get("web/date=2024-01-01/hour=00/a.parquet")
                .await
                .unwrap()[..],
            b"abc"
        );
        s.delete("web/date=2024-01-01/hour=00/a.parquet")
            .await
            .unwrap();
        s.delete("web/date=2024-01-01/hour=00/a.parquet")
            .await
            .unwrap();
        assert_eq!(s.list("web").await.unwrap().len(), 0);
    }

    #[test]
    fn bad_locations_are_named() {
        let e = LakeStore::open("ftp://x/y", &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `ftp`"), "{e}");
        let mut o = BTreeMap::new();
        o.insert("aws_colour".to_string(), "blue".to_string());
        let e = LakeStore::open("s3://bucket/lake", &o).unwrap_err();
        assert!(e.to_string().contains("unknown key `aws_colour`"), "{e}");
    }
}
