//! One suite of store semantics, run against every backend: what the rest of the host relies on
//! must not depend on which store an operator picked.
//!
//! sled always runs; PostgreSQL whenever a test server is configured (see [`TestDatabase`]),
//! which `cargo xtask test` always does. Each test gets a database of its own; "hosts" are
//! several stores opened on it.

use super::kv::{KvChange, KvEntry, KvError, KvLimits, KvOutcome};
use super::test_database::TestDatabase;
use super::{
    Artifact, AuditRecord, Durability, Op, PgStore, PluginRecord, SledStore, Space, Store,
};
use std::sync::Arc;

const LIMITS: KvLimits = KvLimits {
    max_value: 1024,
    quota: 64 * 1024,
};

/// A scratch sled directory.
fn sled_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plinth-conformance-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `check` against each backend with `hosts` stores on the same data: sled (which one
/// process owns, so its "hosts" share one store) and PostgreSQL (one store per host).
async fn on_every_backend<F, Fut>(hosts: usize, check: F)
where
    F: Fn(&'static str, Vec<Arc<dyn Store>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = sled_dir();
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(&dir, Durability::Durable).await.unwrap());
    check("sled", vec![sled; hosts]).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(database) = TestDatabase::create().await {
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..hosts {
            // Each a store of its own, as another host would open it.
            stores.push(Arc::new(
                PgStore::open_with(database.options())
                    .await
                    .expect("open the PostgreSQL store"),
            ));
        }
        check("postgres", stores).await;
        database.remove().await;
    }
}

fn record(name: &str, sha: &str) -> PluginRecord {
    PluginRecord {
        name: name.into(),
        manifest: format!("name = \"{name}\""),
        sha256: sha.into(),
        size: 3,
        deployed_at_ms: 1,
        version: 0,
        deployed_by: None,
    }
}

fn audit(key: &str) -> AuditRecord {
    AuditRecord {
        key: key.as_bytes().to_vec(),
        value: b"{}".to_vec(),
    }
}

async fn audit_keys(store: &dyn Store) -> Vec<String> {
    store
        .scan(Space::Audit, b"", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

async fn deploy(store: &dyn Store, name: &str, sha: &str, keep: usize) -> PluginRecord {
    let key = format!("deploy {name} {sha}");
    store
        .put_plugin(
            record(name, sha),
            bytes::Bytes::from(format!("component {sha}")),
            None,
            keep,
            Box::new(move |_| Ok(audit(&key))),
        )
        .await
        .unwrap()
}

fn entry(bucket: &str, key: &str, value: &str) -> KvEntry {
    KvEntry {
        bucket: bucket.into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn versions_are_numbered_kept_activated_and_never_reused() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        assert!(store.was_empty_at_open(), "{backend}");
        assert_eq!(deploy(store, "p", "a", 2).await.version, 1, "{backend}");
        assert_eq!(deploy(store, "p", "b", 2).await.version, 2);
        assert_eq!(deploy(store, "p", "c", 2).await.version, 3);
        let kept: Vec<u64> = store
            .plugin_versions("p")
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(
            kept,
            vec![3, 2],
            "{backend}: newest first, the oldest dropped"
        );
        // The dropped version's component went with it; the kept ones stay.
        assert_eq!(store.component("a").await.unwrap(), None, "{backend}");
        assert_eq!(
            store.component("b").await.unwrap(),
            Some(b"component b".to_vec())
        );
        let active = store
            .activate_version("p", 2, audit("rollback p"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((active.version, active.sha256.as_str()), (2, "b"));
        assert_eq!(store.plugins().await.unwrap()[0].version, 2, "{backend}");
        // A version no longer kept cannot be activated, and nothing is recorded for it.
        assert!(
            store
                .activate_version("p", 1, audit("rollback p to 1"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.delete_plugin("p", audit("delete p")).await.unwrap());
        assert!(
            !store
                .delete_plugin("p", audit("delete p again"))
                .await
                .unwrap()
        );
        assert!(store.plugins().await.unwrap().is_empty());
        assert_eq!(store.component("b").await.unwrap(), None, "{backend}");
        // A later deploy of the same name continues the numbering.
        assert_eq!(deploy(store, "p", "d", 2).await.version, 4, "{backend}");
        assert_eq!(
            audit_keys(store).await,
            vec![
                "delete p",
                "deploy p a",
                "deploy p b",
                "deploy p c",
                "deploy p d",
                "rollback p"
            ],
            "{backend}: every change with its entry, nothing for the ones that did nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn shared_components_and_artifacts_live_as_long_as_a_version_uses_them() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        deploy(store, "one", "shared", 1).await;
        deploy(store, "two", "shared", 1).await;
        store
            .put_artifact(
                "shared",
                Artifact {
                    fingerprint: "engine-1".into(),
                    bytes: b"code".to_vec(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store.artifact("shared", "engine-1").await.unwrap(),
            Some(b"code".to_vec()),
            "{backend}"
        );
        assert_eq!(store.artifact("shared", "engine-2").await.unwrap(), None);
        // An artifact of a component nobody stores is not kept.
        store
            .put_artifact(
                "unknown",
                Artifact {
                    fingerprint: "engine-1".into(),
                    bytes: b"code".to_vec(),
                },
            )
            .await
            .unwrap();
        assert_eq!(store.artifact("unknown", "engine-1").await.unwrap(), None);
        assert!(store.delete_plugin("one", audit("d1")).await.unwrap());
        assert!(
            store.component("shared").await.unwrap().is_some(),
            "{backend}"
        );
        assert!(
            store
                .artifact("shared", "engine-1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.delete_plugin("two", audit("d2")).await.unwrap());
        assert!(
            store.component("shared").await.unwrap().is_none(),
            "{backend}"
        );
        assert!(
            store
                .artifact("shared", "engine-1")
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn commits_are_atomic_conditional_and_scans_page_in_byte_order() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        let put = |key: &[u8], value: &[u8]| Op::Put {
            space: Space::Users,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        // Keys whose byte order differs from any language's collation.
        let keys: [&[u8]; 5] = [b"u/B", b"u/a", b"u/\xc3\xa9", b"u/z", b"v/other"];
        assert!(
            store
                .commit(keys.iter().map(|k| put(k, b"1")).collect())
                .await
                .unwrap()
        );
        // A failed precondition applies nothing, not even the ops before it.
        let applied = store
            .commit(vec![
                put(b"u/new", b"x"),
                Op::Expect {
                    space: Space::Users,
                    key: b"u/a".to_vec(),
                    value: Some(b"2".to_vec()),
                },
            ])
            .await
            .unwrap();
        assert!(!applied, "{backend}");
        assert_eq!(store.get(Space::Users, b"u/new").await.unwrap(), None);
        // Spaces are apart.
        assert_eq!(store.get(Space::Emails, b"u/a").await.unwrap(), None);
        let first = store.scan(Space::Users, b"u/", None, 2).await.unwrap();
        let keys_of = |entries: &[(Vec<u8>, Vec<u8>)]| {
            entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            keys_of(&first),
            vec![b"u/B".to_vec(), b"u/a".to_vec()],
            "{backend}"
        );
        let rest = store
            .scan(Space::Users, b"u/", Some(b"u/a"), 10)
            .await
            .unwrap();
        assert_eq!(
            keys_of(&rest),
            vec![b"u/z".to_vec(), b"u/\xc3\xa9".to_vec()],
            "{backend}: bytes order, the prefix's end respected"
        );
        assert!(
            store
                .commit(vec![
                    Op::Expect {
                        space: Space::Users,
                        key: b"u/none".to_vec(),
                        value: None,
                    },
                    Op::Delete {
                        space: Space::Users,
                        key: b"u/a".to_vec(),
                    },
                ])
                .await
                .unwrap()
        );
        assert_eq!(store.get(Space::Users, b"u/a").await.unwrap(), None);
        store.set_meta("k", b"v".to_vec()).await.unwrap();
        assert_eq!(store.meta("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.meta("other").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn exactly_one_racing_conditional_commit_wins_across_hosts() {
    on_every_backend(3, |backend, hosts| async move {
        let key = b"token".to_vec();
        assert!(
            hosts[0]
                .commit(vec![Op::Put {
                    space: Space::RefreshTokens,
                    key: key.clone(),
                    value: b"fresh".to_vec(),
                }])
                .await
                .unwrap()
        );
        // A refresh-token rotation: each racer expects the token unused and marks it used.
        let racers = (0..30).map(|i| {
            let store = hosts[i % hosts.len()].clone();
            let key = key.clone();
            async move {
                store
                    .commit(vec![
                        Op::Expect {
                            space: Space::RefreshTokens,
                            key: key.clone(),
                            value: Some(b"fresh".to_vec()),
                        },
                        Op::Put {
                            space: Space::RefreshTokens,
                            key,
                            value: format!("used by {i}").into_bytes(),
                        },
                    ])
                    .await
                    .unwrap()
            }
        });
        let won = futures_util::future::join_all(racers).await;
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{backend}: {won:?}");
    })
    .await;
}

#[tokio::test]
async fn a_deleted_plugins_requests_cannot_write_on_any_host_but_operators_can() {
    on_every_backend(2, |backend, hosts| async move {
        let put = |value: &str| KvChange::Put(vec![entry("b", "k", value)]);
        deploy(&*hosts[0], "gone", "sha-gone", 2).await;
        hosts[1]
            .kv_apply("gone", put("kept"), LIMITS)
            .await
            .unwrap();
        assert!(
            hosts[0]
                .delete_plugin("gone", audit("delete gone"))
                .await
                .unwrap()
        );
        // A request of the deleted plugin still running on the other host writes nothing,
        // so nothing it does outlives a purge of the data.
        let refused = hosts[1].kv_apply("gone", put("late"), LIMITS).await;
        assert!(
            matches!(refused, Err(KvError::PluginRemoved(_))),
            "{backend}: {refused:?}"
        );
        assert_eq!(
            hosts[0].kv_get("gone", "b", "k").await.unwrap(),
            Some(b"kept".to_vec()),
            "{backend}: the data stays until purged"
        );
        // An operator's import still writes (data before a redeploy), and a redeploy lets the
        // plugin write again; a name never deployed is not refused.
        hosts[0]
            .kv_operator_change(
                "gone",
                KvChange::Put(vec![entry("b", "i", "imported")]),
                LIMITS,
                Some(audit("import")),
            )
            .await
            .unwrap();
        deploy(&*hosts[0], "gone", "sha-gone", 2).await;
        hosts[1]
            .kv_apply("gone", put("back"), LIMITS)
            .await
            .unwrap();
        hosts[1]
            .kv_apply("never-deployed", put("v"), LIMITS)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn kv_reads_writes_counters_and_swaps() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        let outcome = store
            .kv_apply(
                "p",
                KvChange::Put(vec![entry("b", "k", "v1"), entry("b", "k", "v2")]),
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!(outcome, KvOutcome::Done);
        assert_eq!(
            store.kv_get("p", "b", "k").await.unwrap(),
            Some(b"v2".to_vec()),
            "{backend}: the later write of one key in a batch wins"
        );
        // Plugins and buckets are apart.
        assert_eq!(store.kv_get("q", "b", "k").await.unwrap(), None);
        assert_eq!(store.kv_get("p", "c", "k").await.unwrap(), None);
        let increment = |delta| KvChange::Increment {
            bucket: "b".into(),
            key: "n".into(),
            delta,
        };
        assert_eq!(
            store.kv_apply("p", increment(5), LIMITS).await.unwrap(),
            KvOutcome::Counter(5)
        );
        assert_eq!(
            store.kv_apply("p", increment(2), LIMITS).await.unwrap(),
            KvOutcome::Counter(7)
        );
        assert!(matches!(
            store
                .kv_apply(
                    "p",
                    KvChange::Increment {
                        bucket: "b".into(),
                        key: "k".into(),
                        delta: 1
                    },
                    LIMITS
                )
                .await,
            Err(KvError::NotACounter(_))
        ));
        let swap = |expected: Option<&str>, new: &str| KvChange::CompareAndSwap {
            bucket: "b".into(),
            key: "k".into(),
            expected: expected.map(|e| e.as_bytes().to_vec()),
            new: new.as_bytes().to_vec(),
        };
        assert_eq!(
            store
                .kv_apply("p", swap(Some("v1"), "x"), LIMITS)
                .await
                .unwrap(),
            KvOutcome::Swapped(false)
        );
        assert_eq!(
            store
                .kv_apply("p", swap(Some("v2"), "v3"), LIMITS)
                .await
                .unwrap(),
            KvOutcome::Swapped(true)
        );
        let many = store
            .kv_get_many("p", "b", vec!["k".into(), "none".into(), "n".into()], 100)
            .await
            .unwrap();
        assert_eq!(
            many,
            Some(vec![Some(b"v3".to_vec()), None, Some(b"7".to_vec())]),
            "{backend}"
        );
        // Over the byte budget (a key asked for twice counts twice): refused as a whole.
        assert_eq!(
            store
                .kv_get_many("p", "b", vec!["k".into(), "k".into()], 3)
                .await
                .unwrap(),
            None,
            "{backend}"
        );
        store
            .kv_apply(
                "p",
                KvChange::Delete(vec![("b".into(), "k".into())]),
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!(store.kv_get("p", "b", "k").await.unwrap(), None);
        assert_eq!(
            store.kv_usage("p").await.unwrap(),
            super::kv::entry_size("b", "n", 1),
            "{backend}: usage follows every write"
        );
        store.kv_purge("p").await.unwrap();
        assert_eq!(store.kv_usage("p").await.unwrap(), 0);
        assert_eq!(
            store.kv_get("p", "b", "n").await.unwrap(),
            None,
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn kv_key_pages_and_entries_are_in_byte_order_and_visit_each_key_once() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        let keys = ["user/B", "user/a", "user/é", "user/z", "users", "other"];
        store
            .kv_apply(
                "p",
                KvChange::Put(keys.iter().map(|k| entry("b", k, "v")).collect()),
                LIMITS,
            )
            .await
            .unwrap();
        store
            .kv_apply("p", KvChange::Put(vec![entry("a", "first", "v")]), LIMITS)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .kv_keys("p", "b", "user/", after.as_deref(), 2)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            seen.extend(page);
        }
        assert_eq!(
            seen,
            vec!["user/B", "user/a", "user/z", "user/é"],
            "{backend}"
        );
        let entries = store.kv_entries("p", None, 3, usize::MAX).await.unwrap();
        let names = |e: &[KvEntry]| {
            e.iter()
                .map(|e| format!("{}/{}", e.bucket, e.key))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&entries),
            vec!["a/first", "b/other", "b/user/B"],
            "{backend}"
        );
        let next = store
            .kv_entries("p", Some(("b", "user/B")), 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            names(&next),
            vec!["b/user/a", "b/user/z", "b/user/é", "b/users"],
            "{backend}"
        );
        // A page ends with the value that takes it to its byte budget, and always holds one.
        let big = "x".repeat(40);
        store
            .kv_apply(
                "q",
                KvChange::Put((0..4).map(|i| entry("b", &format!("k{i}"), &big)).collect()),
                LIMITS,
            )
            .await
            .unwrap();
        for (budget, expected) in [
            (80, &["b/k0", "b/k1"][..]),
            (81, &["b/k0", "b/k1", "b/k2"]),
            (0, &["b/k0"]),
            (1, &["b/k0"]),
        ] {
            let page = store.kv_entries("q", None, 10, budget).await.unwrap();
            assert_eq!(names(&page), expected, "{backend}: {budget} bytes");
        }
    })
    .await;
}

#[tokio::test]
async fn quotas_hold_and_operator_changes_land_with_their_audit_entry_or_not_at_all() {
    on_every_backend(1, |backend, hosts| async move {
        let store = &*hosts[0];
        let small = KvLimits {
            max_value: 100,
            quota: 3 * super::kv::entry_size("b", "k0", 10),
        };
        let ten = "x".repeat(10);
        let over = (0..4).map(|i| entry("b", &format!("k{i}"), &ten)).collect();
        assert!(matches!(
            store
                .kv_operator_change(
                    "p",
                    KvChange::Put(over),
                    small,
                    Some(audit("import too much"))
                )
                .await,
            Err(KvError::QuotaExceeded { .. })
        ));
        assert_eq!(store.kv_usage("p").await.unwrap(), 0, "{backend}");
        assert!(audit_keys(store).await.is_empty(), "{backend}");
        let fits = (0..3).map(|i| entry("b", &format!("k{i}"), &ten)).collect();
        let (_, usage) = store
            .kv_operator_change("p", KvChange::Put(fits), small, Some(audit("import")))
            .await
            .unwrap();
        assert_eq!(usage, small.quota, "{backend}");
        assert_eq!(audit_keys(store).await, vec!["import"]);
        assert!(matches!(
            store
                .kv_apply("p", KvChange::Put(vec![entry("b", "k9", "y")]), small)
                .await,
            Err(KvError::QuotaExceeded { .. })
        ));
        assert!(matches!(
            store
                .kv_apply(
                    "p",
                    KvChange::Put(vec![entry("b", "k0", &"y".repeat(101))]),
                    small
                )
                .await,
            Err(KvError::ValueTooLarge { .. })
        ));
        // Shrinking is allowed at the quota.
        store
            .kv_apply("p", KvChange::Put(vec![entry("b", "k0", "y")]), small)
            .await
            .unwrap();
        assert_eq!(store.kv_usage("p").await.unwrap(), small.quota - 9);
        // An operator's edit that lost its compare-and-swap writes neither the value nor its
        // entry; one that won, and a delete, write both.
        let edit = |expected: &str, new: &str| KvChange::CompareAndSwap {
            bucket: "b".into(),
            key: "k0".into(),
            expected: Some(expected.as_bytes().to_vec()),
            new: new.as_bytes().to_vec(),
        };
        let (lost, _) = store
            .kv_operator_change("p", edit("stale", "n"), small, Some(audit("lost")))
            .await
            .unwrap();
        assert_eq!(lost, KvOutcome::Swapped(false), "{backend}");
        assert_eq!(audit_keys(store).await, vec!["import"], "{backend}");
        let (won, _) = store
            .kv_operator_change("p", edit("y", "z"), small, Some(audit("m edit")))
            .await
            .unwrap();
        assert_eq!(won, KvOutcome::Swapped(true), "{backend}");
        let (_, usage) = store
            .kv_operator_change(
                "p",
                KvChange::Delete(vec![("b".into(), "k0".into())]),
                small,
                Some(audit("n delete")),
            )
            .await
            .unwrap();
        assert_eq!(
            store.kv_get("p", "b", "k0").await.unwrap(),
            None,
            "{backend}"
        );
        assert_eq!(usage, 2 * super::kv::entry_size("b", "k0", 10), "{backend}");
        assert_eq!(
            audit_keys(store).await,
            vec!["import", "m edit", "n delete"],
            "{backend}"
        );
        // Deleting it again deletes nothing, and records nothing.
        let (again, _) = store
            .kv_operator_change(
                "p",
                KvChange::Delete(vec![("b".into(), "k0".into())]),
                small,
                Some(audit("o delete again")),
            )
            .await
            .unwrap();
        assert_eq!(again, KvOutcome::Deleted(0), "{backend}");
        assert_eq!(audit_keys(store).await.len(), 3, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_increments_across_hosts_add_up_exactly() {
    on_every_backend(3, |backend, hosts| async move {
        let increments = (0..300).map(|i| {
            let store = hosts[i % hosts.len()].clone();
            async move {
                store
                    .kv_apply(
                        "p",
                        KvChange::Increment {
                            bucket: "b".into(),
                            key: "n".into(),
                            delta: 1,
                        },
                        LIMITS,
                    )
                    .await
                    .unwrap()
            }
        });
        let outcomes = futures_util::future::join_all(increments).await;
        let mut counts: Vec<u64> = outcomes
            .iter()
            .map(|o| match o {
                KvOutcome::Counter(n) => *n,
                other => panic!("{other:?}"),
            })
            .collect();
        counts.sort_unstable();
        assert_eq!(
            counts,
            (1..=300).collect::<Vec<_>>(),
            "{backend}: each value once"
        );
        assert_eq!(
            hosts[1].kv_get("p", "b", "n").await.unwrap(),
            Some(b"300".to_vec())
        );
        // 50 racing compare-and-swaps from the same value: exactly one wins.
        let swaps = (0..50).map(|i| {
            let store = hosts[i % hosts.len()].clone();
            async move {
                store
                    .kv_apply(
                        "p",
                        KvChange::CompareAndSwap {
                            bucket: "b".into(),
                            key: "n".into(),
                            expected: Some(b"300".to_vec()),
                            new: format!("{i}").into_bytes(),
                        },
                        LIMITS,
                    )
                    .await
                    .unwrap()
            }
        });
        let swapped = futures_util::future::join_all(swaps).await;
        let won = swapped
            .iter()
            .filter(|o| **o == KvOutcome::Swapped(true))
            .count();
        assert_eq!(won, 1, "{backend}");
        // Concurrent writers of new keys on every host stay within the quota, exactly.
        let quota = KvLimits {
            max_value: 100,
            quota: super::kv::entry_size("b", "n", 3) + 10 * super::kv::entry_size("q", "k00", 1),
        };
        let writes = (0..40).map(|i| {
            let store = hosts[i % hosts.len()].clone();
            async move {
                store
                    .kv_apply(
                        "p",
                        KvChange::Put(vec![entry("q", &format!("k{i:02}"), "v")]),
                        quota,
                    )
                    .await
            }
        });
        let written = futures_util::future::join_all(writes).await;
        let stored = written.iter().filter(|w| w.is_ok()).count();
        assert_eq!(stored, 10, "{backend}: exactly the 10 writes that fit");
        let usage = hosts[2].kv_usage("p").await.unwrap();
        assert!(usage <= quota.quota, "{backend}: {usage} > {}", quota.quota);
        let keys = hosts[0].kv_keys("p", "q", "", None, 100).await.unwrap();
        assert_eq!(keys.len(), stored, "{backend}: usage and data agree");
    })
    .await;
}

#[tokio::test]
async fn hosts_initialising_one_value_at_once_all_keep_the_first() {
    on_every_backend(3, |backend, hosts| async move {
        let racers = (0..12).map(|i| {
            let store = hosts[i % hosts.len()].clone();
            async move {
                store
                    .init_meta("secret", format!("from {i}").into_bytes())
                    .await
                    .unwrap()
            }
        });
        let kept = futures_util::future::join_all(racers).await;
        let stored = hosts[0].meta("secret").await.unwrap().unwrap();
        assert!(kept.iter().all(|k| *k == stored), "{backend}: {kept:?}");
        // Once set, a value stays whatever a later host offers.
        assert_eq!(
            hosts[2]
                .init_meta("secret", b"late".to_vec())
                .await
                .unwrap(),
            stored
        );
    })
    .await;
}
