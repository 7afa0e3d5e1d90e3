//! `squadron admin …`: users, tokens, groups, members, projects and CI
//! backends, and maintenance run by hand. Scripts depend on these shapes; `token create`
//! prints the key alone on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::PossibleValuesParser;
use clap::Subcommand;
use squadron_ci::backend::IMPLEMENTATION_TYPES;
use squadron_ci::BackendRecord;
use squadron_core::access::Role;
use squadron_core::settings::parse_settings;
use squadron_queue::Queue;
use squadron_status::notify::approve_build;
use squadron_status::recompute_project;
use squadron_store::projects::NewProject;
use squadron_store::retention::{cleanup_now, CleanupReport, DataRetention};
use squadron_store::sql::{Assignments, Sql};
use squadron_store::Store;

use crate::cli::Cli;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage groups and their members.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage CI backends (the labs test jobs run in).
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Recompute the build status of every build of a project (or of every
    /// project), oldest build first.
    RecomputeStatus {
        /// GROUP/PROJECT; every project when absent.
        project: Option<String>,
    },
    /// Approve a moderated build's notification: its subscribers get it.
    ApproveBuild {
        /// GROUP/PROJECT.
        project: String,
        /// The build's version.
        version: String,
    },
    /// Run data retention now: delete the builds older than their
    /// project's data_retention_days (unless kept), then remove the blob
    /// files no row refers to any more; print what was done.
    Cleanup {
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// Login name.
        name: String,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
        /// Give the user every permission.
        #[arg(long)]
        superuser: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the user's API token, creating it if needed.
    Create {
        /// The user's login name.
        user: String,
        /// Replace an existing token with a new one.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group.
    Create {
        /// The group's slug.
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Add a user to a group, or change the user's role in it.
    AddMember {
        /// The group's slug.
        group: String,
        /// The user's login name.
        user: String,
        /// member, submitter, privileged or admin.
        #[arg(long)]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// GROUP/SLUG.
        full_name: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Only the group's members may see it.
        #[arg(long)]
        private: bool,
        /// Comma-separated plugin names (stored as given).
        #[arg(long)]
        plugins: Option<String>,
    },
    /// Send the project's moderation previews and failed-CI-job emails to
    /// an address (SQUAD's admin subscription).
    AdminSubscribe {
        /// GROUP/SLUG.
        full_name: String,
        /// The address.
        email: String,
    },
    /// Stop sending them to an address.
    AdminUnsubscribe {
        /// GROUP/SLUG.
        full_name: String,
        /// The address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Create a backend.
    Create {
        /// Its unique name (what `submitjob` and `watchjob` give as `backend`).
        name: String,
        /// The implementation.
        #[arg(long = "type", value_parser = PossibleValuesParser::new(IMPLEMENTATION_TYPES))]
        implementation_type: String,
        /// The lab's URL (its API root).
        #[arg(long)]
        url: String,
        /// User name for the lab's API.
        #[arg(long, default_value = "")]
        username: String,
        /// Token for the lab's API.
        #[arg(long, default_value = "")]
        token: String,
        /// A YAML file of backend settings.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// How long to wait between two fetches of a running job.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Failed fetches after which a job is given up.
        #[arg(long, default_value_t = 3)]
        max_fetch_attempts: u32,
        /// Do not poll this backend's jobs (they are fetched on events or callbacks).
        #[arg(long)]
        no_poll: bool,
        /// Do not follow this backend's events.
        #[arg(long)]
        no_listen: bool,
    },
    /// List the backends.
    List,
    /// Delete a backend that has no test jobs.
    Delete {
        /// Its name.
        name: String,
    },
}

async fn group_id(store: &Store, slug: &str) -> anyhow::Result<i64> {
    match store.group_by_slug(slug).await? {
        Some(group) => Ok(group.id),
        None => bail!("no group {slug:?}"),
    }
}

async fn project_id(store: &Store, full_name: &str) -> anyhow::Result<i64> {
    let (group, slug) =
        full_name.split_once('/').with_context(|| format!("expected GROUP/PROJECT, got {full_name:?}"))?;
    match store.project_by_slug(group_id(store, group).await?, slug).await? {
        Some(p) => Ok(p.id),
        None => bail!("no project {full_name:?}"),
    }
}

async fn user_id(store: &Store, name: &str) -> anyhow::Result<i64> {
    match store.user_by_name(name).await? {
        Some(user) => Ok(user.id),
        None => bail!("no user {name:?}"),
    }
}

/// Runs an admin command.
pub async fn run(cli: &Cli, command: &AdminCommand) -> anyhow::Result<()> {
    let store = cli.open_store().await?;
    match command {
        AdminCommand::User(UserCommand::Create { name, email, superuser }) => {
            let user = store.create_user(name, email, *superuser).await?;
            eprintln!("created user {}{}", user.username, if user.is_superuser { " (superuser)" } else { "" });
        }
        AdminCommand::Token(TokenCommand::Create { user, rotate }) => {
            let id = user_id(&store, user).await?;
            println!("{}", store.token_for(id, *rotate).await?);
        }
        AdminCommand::Group(GroupCommand::Create { slug, name }) => {
            store.create_group(slug, name.as_deref()).await?;
            eprintln!("created group {slug}");
        }
        AdminCommand::Group(GroupCommand::AddMember { group, user, role }) => {
            let (group_id, user_id) = (group_id(&store, group).await?, user_id(&store, user).await?);
            match store.set_member(group_id, user_id, *role).await? {
                None => eprintln!("added {user} to {group} as {role}"),
                Some(previous) => {
                    eprintln!("changed {user}'s role in {group} from {previous} to {role}")
                }
            }
        }
        AdminCommand::Project(ProjectCommand::Create { full_name, name, private, plugins }) => {
            let (group, slug) =
                full_name.split_once('/').with_context(|| format!("expected GROUP/SLUG, got {full_name:?}"))?;
            let group_id = group_id(&store, group).await?;
            let project = NewProject {
                group_id,
                slug,
                name: name.as_deref(),
                is_public: !private,
                enabled_plugins_list: plugins.as_deref(),
            };
            store.create_project(project).await?;
            eprintln!("created project {full_name}{}", if *private { " (private)" } else { "" });
        }
        AdminCommand::Backend(command) => backend(&store, command).await?,
        AdminCommand::RecomputeStatus { project } => {
            let projects: Vec<(i64, String)> = match project {
                Some(full_name) => vec![(project_id(&store, full_name).await?, full_name.clone())],
                None => store
                    .fetch_all(&Sql::new(
                        "SELECT p.id, g.slug || '/' || p.slug FROM projects p JOIN groups g ON g.id = p.group_id ORDER BY p.id",
                    ))
                    .await?,
            };
            for (id, name) in projects {
                let started = std::time::Instant::now();
                let builds = recompute_project(&store, &Queue::new(cli.queue.routes()), id).await?;
                let took = started.elapsed().as_secs_f64() * 1000.0;
                eprintln!("recomputed the status of {builds} build(s) of {name} in {took:.0} ms");
            }
        }
        AdminCommand::ApproveBuild { project, version } => {
            let project_id = project_id(&store, project).await?;
            let Some(build) = store.build_by_version(project_id, version).await? else {
                bail!("no build {version:?} in {project}");
            };
            if approve_build(&store, &Queue::new(cli.queue.routes()), build.id).await? {
                eprintln!("approved build {version} of {project}: its notification is on its way");
            } else {
                bail!("build {version} of {project} has no status yet or is approved already");
            }
        }
        AdminCommand::Cleanup { dry_run } => {
            let cx = DataRetention {
                store: store.clone(),
                blobs: cli.open_blobs()?,
                queue: Queue::new(cli.queue.routes()),
                options: cli.retention.options(),
            };
            let report = cleanup_now(&cx, *dry_run).await?;
            print_cleanup(&store, &report, *dry_run).await?;
        }
        AdminCommand::Project(ProjectCommand::AdminSubscribe { full_name, email }) => {
            let project_id = project_id(&store, full_name).await?;
            store.admin_subscribe(project_id, email).await?;
            eprintln!("{email} now receives the admin emails of {full_name}");
        }
        AdminCommand::Project(ProjectCommand::AdminUnsubscribe { full_name, email }) => {
            let project_id = project_id(&store, full_name).await?;
            if !store.admin_unsubscribe(project_id, email).await? {
                bail!("{email} was not subscribed to the admin emails of {full_name}");
            }
            eprintln!("{email} no longer receives the admin emails of {full_name}");
        }
    }
    store.close().await;
    Ok(())
}

/// Runs a `backend` command.
async fn backend(store: &Store, command: &BackendCommand) -> anyhow::Result<()> {
    match command {
        BackendCommand::Create {
            name,
            implementation_type,
            url,
            username,
            token,
            settings,
            poll_interval,
            max_fetch_attempts,
            no_poll,
            no_listen,
        } => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("--url must be an http:// or https:// URL, got {url:?}");
            }
            let settings = match settings {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
                    parse_settings(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    Some(text)
                }
                None => None,
            };
            let seconds = poll_interval.as_secs();
            if seconds == 0 {
                bail!("--poll-interval must be at least a second");
            }
            let set: Assignments = vec![
                ("name", Some(name.as_str().into())),
                ("implementation_type", Some(implementation_type.as_str().into())),
                ("url", Some(url.as_str().into())),
                ("username", Some(username.as_str().into())),
                ("token", Some(token.as_str().into())),
                ("backend_settings", settings.map(Into::into)),
                ("poll_interval", Some(i64::try_from(seconds).context("--poll-interval is too long")?.into())),
                ("max_fetch_attempts", Some(i64::from(*max_fetch_attempts).into())),
                ("poll_enabled", Some((!no_poll).into())),
                ("listen_enabled", Some((!no_listen).into())),
            ];
            match store.insert_row("backends", &set).await {
                Ok(_) => eprintln!("created backend {name} ({implementation_type}, {url})"),
                Err(e) if e.is_unique_violation() => bail!("backend {name:?} already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        BackendCommand::List => {
            let backends: Vec<BackendRecord> =
                store.fetch_all(&Sql::new("SELECT * FROM backends ORDER BY name")).await?;
            for b in backends {
                let interval = humantime::format_duration(Duration::from_secs(b.poll_interval.max(0) as u64));
                let flags = [(b.poll_enabled, "poll"), (b.listen_enabled, "listen")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, flag)| *flag)
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{}\t{}\t{}\tpoll every {interval}\t{} fetch attempts\t{}",
                    b.name,
                    b.implementation_type,
                    b.url,
                    b.max_fetch_attempts,
                    if flags.is_empty() { "-" } else { &flags }
                );
            }
        }
        BackendCommand::Delete { name } => {
            let mut sql = Sql::new("SELECT id FROM backends WHERE name = ");
            sql.bind(name.as_str());
            let Some((id,)) = store.fetch_optional::<(i64,)>(&sql).await? else {
                bail!("no backend {name:?}");
            };
            match store.delete_row("backends", id).await {
                Ok(_) => eprintln!("deleted backend {name}"),
                Err(e) if e.is_foreign_key_violation() => bail!("backend {name:?} has test jobs; it cannot be deleted"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Prints what `admin cleanup` did (or would do), a line per build and one
/// for the blobs.
async fn print_cleanup(store: &Store, report: &CleanupReport, dry_run: bool) -> anyhow::Result<()> {
    let names: std::collections::HashMap<i64, String> = store
        .fetch_all::<(i64, String)>(&Sql::new(
            "SELECT p.id, g.slug || '/' || p.slug FROM projects p JOIN groups g ON g.id = p.group_id",
        ))
        .await?
        .into_iter()
        .collect();
    let (verb, would) = if dry_run { ("would delete", "would remove") } else { ("deleted", "removed") };
    for (build, d) in &report.builds {
        let project = names.get(&build.project_id).map_or("?", String::as_str);
        println!(
            "{verb} build {} of {project}: {} test run(s), {} test(s), {} metric(s)",
            build.version, d.runs, d.tests, d.metrics
        );
    }
    let b = &report.blobs;
    println!(
        "{would} {} blob file(s) ({} bytes) of {} examined ({} still referenced, {} too recent), {} partial upload(s)",
        b.removed, b.removed_bytes, b.examined, b.referenced, b.young, b.partials
    );
    Ok(())
}
