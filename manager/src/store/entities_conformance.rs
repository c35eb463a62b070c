//! The entity part of the conformance suite: what [`EntityStore`] must do on
//! every backend. Backends run it with [`entity_conformance_suite!`] next to
//! the main suite, with the same fixture.

use anyhow::{bail, ensure};

use super::entities::{Action, DeleteOutcome, EntityKey, EntityWrite, ScopeFilter};
use super::{Error, Store};

/// Expands to one `#[tokio::test]` per entity conformance function (see
/// `conformance_suite!` for the fixture contract).
macro_rules! entity_conformance_suite {
    ($fixture:ty) => {
        $crate::store::entities_conformance::entity_conformance_suite!(@each $fixture;
            entity_apply_creates_keeps_and_updates,
            entity_apply_is_all_or_nothing,
            entity_references_resolve_within_one_apply,
            entity_delete_refused_while_referenced,
            entity_update_replaces_references,
            entity_list_filters_and_orders,
            entity_scopes_are_separate,
            entity_changes_are_audited,
        );
    };
    (@each $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = <$fixture>::new().await;
                let outcome = $crate::store::entities_conformance::$name(fixture.store()).await;
                fixture.finish().await;
                if let Err(e) = outcome {
                    panic!("{}: {e:?}", stringify!($name));
                }
            }
        )*
    };
}
pub(crate) use entity_conformance_suite;

fn key(project: &str, kind: &str, id: &str) -> EntityKey {
    EntityKey::new("default", "default", project, kind, id)
}

fn write(k: &EntityKey, json: &str, refs: &[(&str, &str)]) -> EntityWrite {
    EntityWrite {
        key: k.clone(),
        name: format!("{} name", k.identifier),
        yaml: format!("{}:\n  identifier: {}\n", k.kind, k.identifier),
        json: json.to_string(),
        refs: refs.iter().map(|(k, i)| (k.to_string(), i.to_string())).collect(),
    }
}

fn is_conflict<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Conflict { .. }))
}

pub(crate) async fn entity_apply_creates_keeps_and_updates(store: &dyn Store) -> anyhow::Result<()> {
    let k = key("p", "service", "web");
    let first = write(&k, r#"{"service":{"a":1}}"#, &[]);
    ensure!(store.apply_entities(std::slice::from_ref(&first), "admin", 1_000).await? == [Action::Created]);
    let r = store.get_entity(&k).await?.ok_or_else(|| anyhow::anyhow!("not stored"))?;
    ensure!(r.version == 1 && r.created_ms == 1_000 && r.updated_ms == 1_000, "{r:?}");
    ensure!(r.yaml == first.yaml && r.json == first.json && r.name == "web name", "{r:?}");

    // Same JSON: unchanged, version kept, but a new YAML text (comments) is kept for describe.
    let mut same = first.clone();
    same.yaml = format!("# reviewed\n{}", first.yaml);
    ensure!(store.apply_entities(std::slice::from_ref(&same), "admin", 2_000).await? == [Action::Unchanged]);
    let r = store.get_entity(&k).await?.unwrap();
    ensure!(r.version == 1 && r.updated_ms == 1_000 && r.yaml == same.yaml, "{r:?}");

    let changed = write(&k, r#"{"service":{"a":2}}"#, &[]);
    ensure!(store.apply_entities(std::slice::from_ref(&changed), "admin", 3_000).await? == [Action::Updated]);
    let r = store.get_entity(&k).await?.unwrap();
    ensure!(
        r.version == 2 && r.created_ms == 1_000 && r.updated_ms == 3_000 && r.json == changed.json,
        "{r:?}"
    );
    ensure!(store.apply_entities(&[changed], "admin", 4_000).await? == [Action::Unchanged]);
    ensure!(store.get_entity(&key("p", "service", "other")).await?.is_none());
    Ok(())
}

pub(crate) async fn entity_apply_is_all_or_nothing(store: &dyn Store) -> anyhow::Result<()> {
    let svc = key("p", "service", "web");
    let pipe = key("p", "pipeline", "release");
    let r = store
        .apply_entities(
            &[write(&svc, "{}", &[]), write(&pipe, "{}", &[("environment", "prod")])],
            "admin",
            1_000,
        )
        .await;
    ensure!(is_conflict(&r), "a dangling reference must refuse the apply: {r:?}");
    if let Err(e) = &r {
        ensure!(e.to_string().contains("environment prod"), "{e}");
    }
    ensure!(store.list_entities(None, &ScopeFilter::default()).await?.is_empty(), "nothing may be written");
    ensure!(store.list_audit(10).await?.is_empty(), "no audit for a refused apply");
    Ok(())
}

pub(crate) async fn entity_references_resolve_within_one_apply(store: &dyn Store) -> anyhow::Result<()> {
    let svc = key("p", "service", "web");
    let pipe = key("p", "pipeline", "release");
    // The referrer comes first: order within an apply does not matter.
    let actions = store
        .apply_entities(&[write(&pipe, "{}", &[("service", "web")]), write(&svc, "{}", &[])], "admin", 1)
        .await?;
    ensure!(actions == [Action::Created, Action::Created], "{actions:?}");
    Ok(())
}

pub(crate) async fn entity_delete_refused_while_referenced(store: &dyn Store) -> anyhow::Result<()> {
    let svc = key("p", "service", "web");
    let pipe = key("p", "pipeline", "release");
    store
        .apply_entities(&[write(&svc, "{}", &[]), write(&pipe, "{}", &[("service", "web")])], "admin", 1)
        .await?;
    match store.delete_entity(&svc, "admin", 2).await? {
        DeleteOutcome::Referenced(by) => ensure!(by == [pipe.clone()], "{by:?}"),
        other => bail!("expected a refusal, got {other:?}"),
    }
    ensure!(store.get_entity(&svc).await?.is_some(), "a refused delete keeps the entity");
    match store.delete_entity(&pipe, "admin", 3).await? {
        DeleteOutcome::Deleted(r) => ensure!(r.key == pipe, "{r:?}"),
        other => bail!("expected a delete, got {other:?}"),
    }
    ensure!(matches!(store.delete_entity(&svc, "admin", 4).await?, DeleteOutcome::Deleted(_)));
    ensure!(store.delete_entity(&svc, "admin", 5).await? == DeleteOutcome::NotFound);
    ensure!(store.get_entity(&svc).await?.is_none());
    Ok(())
}

pub(crate) async fn entity_update_replaces_references(store: &dyn Store) -> anyhow::Result<()> {
    let (a, b) = (key("p", "service", "a"), key("p", "service", "b"));
    let pipe = key("p", "pipeline", "release");
    store
        .apply_entities(
            &[write(&a, "{}", &[]), write(&b, "{}", &[]), write(&pipe, r#"{"v":1}"#, &[("service", "a")])],
            "admin",
            1,
        )
        .await?;
    store.apply_entities(&[write(&pipe, r#"{"v":2}"#, &[("service", "b")])], "admin", 2).await?;
    ensure!(
        matches!(store.delete_entity(&a, "admin", 3).await?, DeleteOutcome::Deleted(_)),
        "a is no longer used"
    );
    ensure!(
        matches!(store.delete_entity(&b, "admin", 3).await?, DeleteOutcome::Referenced(_)),
        "b is used now"
    );
    Ok(())
}

pub(crate) async fn entity_list_filters_and_orders(store: &dyn Store) -> anyhow::Result<()> {
    let writes = [
        write(&key("q", "service", "b"), "{}", &[]),
        write(&key("p", "service", "z"), "{}", &[]),
        write(&key("p", "connector", "c"), "{}", &[]),
        write(&EntityKey::new("default", "other", "p", "service", "a"), "{}", &[]),
    ];
    store.apply_entities(&writes, "admin", 1).await?;
    let ids = |v: Vec<super::entities::EntityRecord>| {
        v.into_iter()
            .map(|r| format!("{}:{}/{}:{}", r.key.kind, r.key.org, r.key.project, r.key.identifier))
            .collect::<Vec<_>>()
    };
    let all = ids(store.list_entities(None, &ScopeFilter::default()).await?);
    ensure!(
        all == ["connector:default/p:c", "service:default/p:z", "service:default/q:b", "service:other/p:a"],
        "{all:?}"
    );
    let services = ids(store.list_entities(Some("service"), &ScopeFilter::default()).await?);
    ensure!(services.len() == 3, "{services:?}");
    let scoped = ScopeFilter {
        account: Some("default".into()),
        org: Some("default".into()),
        project: Some("p".into()),
    };
    let in_p = ids(store.list_entities(Some("service"), &scoped).await?);
    ensure!(in_p == ["service:default/p:z"], "{in_p:?}");
    let org_only = ScopeFilter { org: Some("other".into()), ..ScopeFilter::default() };
    ensure!(ids(store.list_entities(None, &org_only).await?) == ["service:other/p:a"]);
    Ok(())
}

pub(crate) async fn entity_scopes_are_separate(store: &dyn Store) -> anyhow::Result<()> {
    store.apply_entities(&[write(&key("p1", "service", "web"), "{}", &[])], "admin", 1).await?;
    let r = store
        .apply_entities(&[write(&key("p2", "pipeline", "x"), "{}", &[("service", "web")])], "admin", 2)
        .await;
    ensure!(is_conflict(&r), "a reference resolves in its own scope only: {r:?}");
    let actions = store
        .apply_entities(&[write(&key("p2", "service", "web"), r#"{"other":1}"#, &[])], "admin", 3)
        .await?;
    ensure!(actions == [Action::Created], "same identifier, other project: {actions:?}");
    ensure!(store.get_entity(&key("p1", "service", "web")).await?.unwrap().json == "{}");
    Ok(())
}

pub(crate) async fn entity_changes_are_audited(store: &dyn Store) -> anyhow::Result<()> {
    let k = key("p", "service", "web");
    store.apply_entities(&[write(&k, "{}", &[])], "admin", 1).await?;
    store.apply_entities(&[write(&k, "{}", &[])], "admin", 2).await?;
    store.apply_entities(&[write(&k, r#"{"a":1}"#, &[])], "admin", 3).await?;
    store.delete_entity(&k, "admin", 4).await?;
    let audit = store.list_audit(10).await?;
    let seen: Vec<(&str, &str, &str)> =
        audit.iter().map(|a| (a.action.as_str(), a.subject.as_str(), a.detail.as_str())).collect();
    let subject = "default/default/p/service/web";
    ensure!(
        seen == [
            ("entity.delete", subject, "version 2"),
            ("entity.update", subject, "version 2"),
            ("entity.create", subject, "version 1")
        ],
        "unchanged applies are not audited: {seen:?}"
    );
    Ok(())
}
