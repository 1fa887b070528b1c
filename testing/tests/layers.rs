//! The architecture's dependency rules (ARCHITECTURE.md), checked against
//! `cargo metadata` so a forbidden edge fails the build's tests.
use std::collections::BTreeMap;
use std::process::Command;

/// Workspace crates each crate may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("hush-proto", &[]),
    ("hush-crypto", &["hush-proto"]),
    ("hush-client", &["hush-crypto", "hush-proto"]),
    ("hush-tui", &["hush-client", "hush-crypto", "hush-proto"]),
    (
        "hush-cli",
        &[
            "hush-tui",
            "hush-client",
            "hush-crypto",
            "hush-proto",
            "hush-clidoc",
        ],
    ),
    ("hush-clidoc", &[]),
    ("hush-store", &["hush-proto"]),
    ("hush-store-sqlite", &["hush-store", "hush-proto"]),
    ("hush-store-postgres", &["hush-store", "hush-proto"]),
    // P438: the relay checks handshakes through hush-crypto's `relay` view.
    ("hush-server", &["hush-store", "hush-crypto", "hush-proto"]),
    (
        "hushd",
        &[
            "hush-server",
            "hush-store",
            "hush-store-sqlite",
            "hush-store-postgres",
            "hush-proto",
            "hush-clidoc",
        ],
    ),
    // The load generator: a client from outside, plus a throw-away PostgreSQL
    // schema (hush_store_postgres::scratch) for the clusters it starts.
    (
        "hush-bench",
        &[
            "hush-client",
            "hush-crypto",
            "hush-proto",
            "hush-store-postgres",
        ],
    ),
    ("hush-fuzz", &["hush-server", "hush-store", "hush-proto"]),
    ("hush-testing", &[]),
];

/// External crates only some workspace crates may use.
const CONFINED: &[(&str, &[&str])] = &[
    // SQL: the storage adapters, and the client's local database.
    ("rusqlite", &["hush-store-sqlite", "hush-client"]),
    ("sqlx", &["hush-store-postgres", "hush-store-sqlite"]),
    // TLS and sockets.
    ("rustls", &["hush-server", "hush-client"]),
    ("tokio-rustls", &["hush-server", "hush-client"]),
    // MLS: the protocol lives in hush-crypto (the server uses its public-state view,
    // P438, through it); hush-client only binds openmls' storage to its database.
    ("openmls", &["hush-crypto"]),
    ("openmls_sqlite_storage", &["hush-client"]),
    ("openmls_rust_crypto", &["hush-crypto", "hush-client"]),
];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn normal_deps() -> BTreeMap<String, Vec<String>> {
    let meta = metadata();
    let mut out = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let deps = pkg["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        out.insert(pkg["name"].as_str().unwrap().to_owned(), deps);
    }
    out
}

#[test]
fn workspace_dependencies_point_downwards_only() {
    let deps = normal_deps();
    let allowed: BTreeMap<_, _> = ALLOWED.iter().copied().collect();
    for (krate, ds) in &deps {
        let ok = allowed.get(krate.as_str()).unwrap_or_else(|| {
            panic!("{krate} is not in the layer table: add it to ARCHITECTURE.md and ALLOWED")
        });
        for d in ds.iter().filter(|d| deps.contains_key(*d)) {
            assert!(ok.contains(&d.as_str()), "{krate} must not depend on {d}");
        }
    }
}

#[test]
fn sql_tls_and_mls_stay_in_their_crates() {
    let deps = normal_deps();
    for (external, owners) in CONFINED {
        for (krate, ds) in &deps {
            if ds.iter().any(|d| d == external) {
                assert!(
                    owners.contains(&krate.as_str()),
                    "{krate} must not use {external}"
                );
            }
        }
    }
}
