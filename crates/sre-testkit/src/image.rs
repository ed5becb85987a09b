//! An adapter's OCI image, assembled without pulling anything: the binary with exactly the
//! shared libraries it loads (as `ldd` names them), the CA bundle, `/etc/passwd` and
//! `/etc/group` with the non-root user 65532, and an empty `/tmp`, in one layer `FROM
//! scratch`. Time zones are compiled into the binaries (jiff's bundled tzdb), so no
//! `/usr/share/zoneinfo` is needed.
//!
//! `cargo xtask image` writes these images as OCI archives (this file is compiled into
//! xtask too) and the Containerfile copies the same root file system, written by
//! [`write_rootfs`], onto `scratch`: both ways give one layout. The image test
//! (`tests/it/images.rs`) runs them read-only as uid 65532.
//!
//! Archives are reproducible: entries are sorted, owned by root (0:0) unless they must be
//! the user's, and dated [`Meta::created`], so the same binary gives the same digest.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The non-root user and group the images run as (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;
/// Where the binary is in the image.
pub const BINARY: &str = "usr/local/bin/adapter";
/// Where the charts mount the configuration; the image's default command reads it.
pub const CONFIG: &str = "/etc/sre/config/config.yaml";
/// The CA bundle the vendors' TLS roots are read from (rustls-native-certs' first place).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// One entry of the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its mode and owner.
    Dir {
        /// Mode bits (e.g. `0o755`).
        mode: u32,
        /// Owner uid and gid.
        owner: u32,
    },
    /// A regular file with its contents.
    File {
        /// Mode bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
}

/// A root file system: path (relative, no leading `/`) → entry. Parent directories are
/// added by [`RootFs::insert_file`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RootFs {
    /// Every entry, sorted by path.
    pub entries: BTreeMap<String, Entry>,
}

impl RootFs {
    /// Adds a directory (and its parents, `0755` root's).
    pub fn insert_dir(&mut self, path: &str, mode: u32, owner: u32) {
        let path = path.trim_matches('/');
        self.parents(path);
        self.entries.insert(path.to_owned(), Entry::Dir { mode, owner });
    }

    /// Adds a file (and its parents, `0755` root's).
    pub fn insert_file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_matches('/');
        self.parents(path);
        self.entries.insert(path.to_owned(), Entry::File { mode, data });
    }

    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for part in parts {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.entries.entry(at.clone()).or_insert(Entry::Dir { mode: 0o755, owner: 0 });
        }
    }

    /// Bytes of file contents.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len() as u64,
                Entry::Dir { .. } => 0,
            })
            .sum()
    }
}

/// What went wrong assembling an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the binary, a library or the CA bundle, or writing the result.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// `ldd` could not say what the binary loads.
    #[error("ldd {0}: {1}")]
    Ldd(PathBuf, String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io { what, path: path.to_owned(), source })
}

/// The shared libraries `binary` loads, the dynamic loader among them, as `ldd` prints
/// them; empty for a static binary.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd").arg(binary).output().map_err(|e| Error::Ldd(binary.to_owned(), e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": static, nothing to carry.
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(Error::Ldd(binary.to_owned(), err.trim().to_owned()));
    }
    Ok(parse_ldd(&text))
}

/// The paths in `ldd`'s output: `name => /path (0x…)` and the loader's `/path (0x…)`;
/// the vDSO (no file) is left out.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// The root file system of the image of `binary`: the binary, its libraries, the CA
/// bundle at `ca_bundle`, the users and an empty `/tmp`.
pub fn rootfs(binary: &Path, ca_bundle: &Path) -> Result<RootFs, Error> {
    let mut fs = RootFs::default();
    fs.insert_file(BINARY, 0o755, read("reading the binary", binary)?);
    for lib in libraries(binary)? {
        let data = read("reading the library", &lib)?;
        fs.insert_file(&lib.to_string_lossy(), 0o755, data);
    }
    fs.insert_file(CA_BUNDLE, 0o644, read("reading the CA bundle", ca_bundle)?);
    fs.insert_file(
        "etc/passwd",
        0o644,
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        )
        .into_bytes(),
    );
    fs.insert_file("etc/group", 0o644, format!("root:x:0:\nnonroot:x:{NONROOT}:\n").into_bytes());
    fs.insert_dir("home/nonroot", 0o700, NONROOT);
    fs.insert_dir("tmp", 0o1777, 0);
    fs.insert_dir("etc/sre/config", 0o755, 0);
    Ok(fs)
}

/// Writes `fs` under `dir` (for the Containerfile's `COPY --from=build /rootfs/ /`):
/// modes are kept; owners are set when running as root.
pub fn write_rootfs(fs: &RootFs, dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    for (path, entry) in &fs.entries {
        let at = dir.join(path);
        let (mode, owner) = match entry {
            Entry::Dir { mode, owner } => {
                std::fs::create_dir_all(&at).map_err(io("creating", &at))?;
                (*mode, *owner)
            }
            Entry::File { mode, data } => {
                std::fs::write(&at, data).map_err(io("writing", &at))?;
                (*mode, 0)
            }
        };
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode)).map_err(io("setting the mode of", &at))?;
        if owner != 0 {
            // Only root may give files away; elsewhere the layer's tar carries the owner.
            let _ = std::os::unix::fs::chown(&at, Some(owner), Some(owner));
        }
    }
    Ok(())
}

/// A tar (ustar) of `fs`, sorted, dated `mtime`.
pub fn layer_tar(fs: &RootFs, mtime: u64) -> Vec<u8> {
    let mut tar = Vec::with_capacity(fs.file_bytes() as usize + fs.entries.len() * 1024 + 1024);
    for (path, entry) in &fs.entries {
        match entry {
            Entry::Dir { mode, owner } => tar_entry(&mut tar, &format!("{path}/"), *mode, *owner, b'5', &[], mtime),
            Entry::File { mode, data } => tar_entry(&mut tar, path, *mode, 0, b'0', data, mtime),
        }
    }
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

/// One ustar header and its data, padded to 512 bytes. Names over 100 bytes are split
/// into ustar's prefix (155) and name (100) at a `/`.
fn tar_entry(out: &mut Vec<u8>, path: &str, mode: u32, owner: u32, kind: u8, data: &[u8], mtime: u64) {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        let cut = path[..path.len().min(156)].rfind('/').filter(|&i| path.len() - i - 1 <= 100).unwrap_or_else(|| {
            panic!("{path}: too long for a ustar name");
        });
        (&path[..cut], &path[cut + 1..])
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(owner));
    octal(&mut h[116..124], u64::from(owner));
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// What describes an image besides its file system.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    /// The adapter (image title), e.g. `alertmanager-ingress`.
    pub name: &'a str,
    /// Its version (the tag).
    pub version: &'a str,
    /// The source repository, for the label.
    pub source: &'a str,
    /// When it was made, in seconds since the epoch: the date of every entry and of the
    /// image (`SOURCE_DATE_EPOCH`, or the commit's time, for reproducible digests).
    pub created: u64,
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The manifest's digest (what a registry calls the image).
    pub digest: String,
    /// The config's digest (what podman and Docker call the image id).
    pub id: String,
    /// Bytes of the (uncompressed) layer.
    pub layer_bytes: u64,
    /// Bytes of the archive.
    pub archive_bytes: u64,
}

/// Writes `fs` as an OCI image archive (`oci-archive:` for podman and skopeo, an OCI
/// layout in a tar) at `out`, tagged `meta.name:meta.version`.
pub fn write_oci_archive(fs: &RootFs, meta: &Meta<'_>, out: &Path) -> Result<Built, Error> {
    let mtime = meta.created;
    let created = jiff::Timestamp::from_second(i64::try_from(mtime).unwrap_or(0)).unwrap_or_default().to_string();
    let layer = layer_tar(fs, mtime);
    let layer_digest = sha256(&layer);
    let labels = serde_json::json!({
        "org.opencontainers.image.title": meta.name,
        "org.opencontainers.image.version": meta.version,
        "org.opencontainers.image.source": meta.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    let config = serde_json::json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{NONROOT}:{NONROOT}"),
            "Entrypoint": [format!("/{BINARY}")],
            "Cmd": ["--config", CONFIG],
            "Env": ["PATH=/usr/local/bin", format!("SSL_CERT_FILE=/{CA_BUNDLE}")],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    });
    let config = serde_json::to_vec(&config).expect("json");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
        "annotations": labels,
    });
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": format!("{}:{}", meta.name, meta.version) },
        }],
    });
    let index = serde_json::to_vec(&index).expect("json");
    let mut archive = RootFs::default();
    archive.insert_file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    archive.insert_file("index.json", 0o644, index);
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let built =
        Built { digest: sha256(&manifest), id: sha256(&config), layer_bytes: layer.len() as u64, archive_bytes: 0 };
    archive.insert_file(&blob(&built.id), 0o644, config);
    archive.insert_file(&blob(&built.digest), 0o644, manifest);
    archive.insert_file(&blob(&layer_digest), 0o644, layer);
    let bytes = layer_tar(&archive, mtime);
    std::fs::write(out, &bytes).map_err(|source| Error::Io { what: "writing", path: out.to_owned(), source })?;
    Ok(Built { archive_bytes: bytes.len() as u64, ..built })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_libraries_and_the_loader_but_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn the_layer_is_a_tar_that_tar_reads_with_modes_owners_and_long_names() {
        let mut fs = RootFs::default();
        fs.insert_file("usr/local/bin/adapter", 0o755, b"#!binary".to_vec());
        let long = format!("lib/{}/libx.so", "d".repeat(120));
        fs.insert_file(&long, 0o644, vec![7; 1000]);
        fs.insert_dir("tmp", 0o1777, 0);
        fs.insert_dir("home/nonroot", 0o700, NONROOT);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("layer.tar");
        std::fs::write(&file, layer_tar(&fs, 0)).expect("write");
        let out = Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&file).output().expect("tar");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        let line = |p: &str| listing.lines().find(|l| l.ends_with(p)).unwrap_or_else(|| panic!("{p}: {listing}"));
        assert!(line("usr/local/bin/adapter").starts_with("-rwxr-xr-x 0/0"), "{listing}");
        assert!(line("tmp/").starts_with("drwxrwxrwt 0/0"), "{listing}");
        assert!(line("home/nonroot/").starts_with("drwx------ 65532/65532"), "{listing}");
        assert!(line(&long).contains(" 1000 "), "{listing}");
    }

    #[test]
    fn the_same_file_system_gives_the_same_digest() {
        let mut fs = RootFs::default();
        fs.insert_file("usr/local/bin/adapter", 0o755, b"binary".to_vec());
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Meta { name: "x", version: "0.1.0", source: "https://example.com", created: 1_700_000_000 };
        let a = write_oci_archive(&fs, &meta, &dir.path().join("a.tar")).expect("a");
        let b = write_oci_archive(&fs, &meta, &dir.path().join("b.tar")).expect("b");
        assert_eq!(a, b);
        fs.insert_file("etc/passwd", 0o644, b"x".to_vec());
        let c = write_oci_archive(&fs, &meta, &dir.path().join("c.tar")).expect("c");
        assert_ne!(a.digest, c.digest);
    }
}
