//! Users, tokens, groups, members, projects, builds: on both engines.

use squadron_core::access::Role;
use squadron_core::callbacks::CallbackSpec;
use squadron_store::builds::PatchFields;
use squadron_store::projects::NewProject;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;
use squadron_store::{both_engines, Migrations, Store, StoreError};

both_engines! {
    async fn users_and_tokens(db: TestDb) {
        let s = &db.store;
        let alice = s.create_user("alice", "alice@example.com", false).await.unwrap();
        assert!(matches!(s.create_user("alice", "", false).await, Err(StoreError::AlreadyExists(_))));
        assert_eq!(s.user_by_name("alice").await.unwrap(), Some(alice.clone()));
        assert_eq!(s.user_by_name("bob").await.unwrap(), None);

        let key = s.token_for(alice.id, false).await.unwrap();
        assert_eq!(key.len(), 40);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(s.token_for(alice.id, false).await.unwrap(), key, "an existing key is given again");
        assert_eq!(s.user_by_token(&key).await.unwrap(), Some(alice.clone()));

        let rotated = s.token_for(alice.id, true).await.unwrap();
        assert_ne!(rotated, key);
        assert_eq!(s.user_by_token(&key).await.unwrap(), None, "the old key no longer works");
        assert_eq!(s.user_by_token(&rotated).await.unwrap().unwrap().id, alice.id);
    }

    async fn groups_members_and_projects(db: TestDb) {
        let s = &db.store;
        let user = s.create_user("u", "", false).await.unwrap();
        let group = s.create_group("lkft", Some("LKFT")).await.unwrap();
        assert_eq!(group.name.as_deref(), Some("LKFT"));
        assert!(s.create_group("~alice", None).await.is_ok());
        assert!(matches!(s.create_group("lkft", None).await, Err(StoreError::AlreadyExists(_))));
        let bad = s.create_group("-bad", None).await.unwrap_err();
        assert!(bad.to_string().contains("\"-bad\""), "{bad}");

        assert_eq!(s.role_in_group(user.id, group.id).await.unwrap(), None);
        assert_eq!(s.set_member(group.id, user.id, Role::Submitter).await.unwrap(), None);
        assert_eq!(s.role_in_group(user.id, group.id).await.unwrap(), Some(Role::Submitter));
        assert_eq!(s.set_member(group.id, user.id, Role::Admin).await.unwrap(), Some(Role::Submitter));
        assert_eq!(s.role_in_group(user.id, group.id).await.unwrap(), Some(Role::Admin));

        let project = s
            .create_project(NewProject { group_id: group.id, slug: "linux", name: Some("Linux"), is_public: false, enabled_plugins_list: Some("linux-log-parser,tradefed,not-a-plugin") })
            .await
            .unwrap();
        assert!(!project.is_public);
        assert_eq!(project.enabled_plugins(), vec!["linux-log-parser", "tradefed", "not-a-plugin"]);
        assert_eq!(project.full_name("lkft"), "lkft/linux");
        assert_eq!(s.project_by_slug(group.id, "linux").await.unwrap(), Some(project));
        let again = NewProject { group_id: group.id, slug: "linux", ..Default::default() };
        assert!(matches!(s.create_project(again).await, Err(StoreError::AlreadyExists(_))));
        let bad = NewProject { group_id: group.id, slug: "a b", ..Default::default() };
        assert!(matches!(s.create_project(bad).await, Err(StoreError::Invalid(_))));
    }

    async fn createbuild_with_patch_and_callback(db: TestDb) {
        let s = &db.store;
        let group = s.create_group("g", None).await.unwrap();
        let project = s.create_project(NewProject { group_id: group.id, slug: "p", is_public: true, ..Default::default() }).await.unwrap();
        s.create_patch_source("gh", "https://api.github.com", "github").await.unwrap();
        let callback = CallbackSpec {
            url: "https://ci.example.com/hook".into(),
            method: "post".into(),
            event: "on_build_finished".into(),
            headers: None,
            payload: None,
            payload_is_json: true,
            record_response: false,
        };
        let (base, created) = s.create_build(project.id, "v1", PatchFields::default(), None).await.unwrap();
        assert!(created);
        let patch = PatchFields { source: Some("gh"), baseline: Some("v1"), id: Some("o/r/abc"), ..Default::default() };
        let (build, created) = s.create_build(project.id, "v2", patch, Some(&callback)).await.unwrap();
        assert!(created);
        assert_eq!(build.patch_baseline_id, Some(base.id));
        assert_eq!(build.patch_id.as_deref(), Some("o/r/abc"));
        assert!(build.patch_source_id.is_some());

        // An existing build keeps its fields; the same callback twice is refused.
        let (again, created) = s.create_build(project.id, "v2", PatchFields::default(), None).await.unwrap();
        assert!(!created);
        assert_eq!(again, build);
        assert!(matches!(s.create_build(project.id, "v2", PatchFields::default(), Some(&callback)).await, Err(StoreError::AlreadyExists(_))));
        assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks").await, 1);

        let unknown = PatchFields { source: Some("nope"), ..Default::default() };
        let err = s.create_build(project.id, "v3", unknown, None).await.unwrap_err();
        assert!(matches!(&err, StoreError::NotFound(what) if what.contains("nope")), "{err}");
        let unknown = PatchFields { baseline: Some("v9"), ..Default::default() };
        assert!(matches!(s.create_build(project.id, "v3", unknown, None).await, Err(StoreError::NotFound(_))));
        assert_eq!(s.build_by_version(project.id, "v3").await.unwrap(), None, "nothing created on error");
    }

    async fn migrations_are_required_unless_applied(db: TestDb) {
        assert_eq!(db.store.pending_migrations().await.unwrap(), 0);
        assert_eq!(db.store.migrate().await.unwrap(), 0, "migrating twice is a no-op");
        assert!(Store::open(&db.url, Migrations::Require).await.is_ok());
        // Forget that the migrations ran: the database now looks older than the binary.
        db.execute("DELETE FROM _sqlx_migrations").await;
        let err = Store::open(&db.url, Migrations::Require).await.err().expect("pending migrations refused");
        assert!(matches!(err, StoreError::PendingMigrations { count, .. } if count > 0), "{err}");
        assert!(err.to_string().contains("squadron migrate"), "{err}");
    }

    async fn cancelled_writes_do_not_poison_the_pool(db: TestDb) {
        // Abort writers at every point of their transactions; the store must
        // stay usable and keep no half-done write.
        let mut i = 0;
        for polls in 0..30 {
            for _ in 0..5 {
                i += 1;
                let slug = format!("g{i}");
                drop_after_polls(db.store.create_group(&slug, None), polls).await;
            }
        }
        let group = db.store.create_group("after", None).await.expect("writes still work");
        assert_eq!(db.store.group_by_slug("after").await.unwrap(), Some(group));
        let committed = db.scalar("SELECT COUNT(*) FROM groups").await;
        assert!((1..=151).contains(&committed));
    }
}

/// Polls `future` up to `polls` times, letting other threads run between
/// polls, then drops it: a cancellation at a chosen await point.
async fn drop_after_polls<F: std::future::Future>(future: F, polls: usize) {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        let poll = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await;
        if poll.is_ready() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}
