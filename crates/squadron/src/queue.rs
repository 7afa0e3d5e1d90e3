//! `squadron queue …`: what operators do with the task queue.

use anyhow::Context;
use clap::Subcommand;
use squadron_queue::admin::{self, QueueStatus, TaskInfo, STATES};

use crate::cli::Cli;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue's depth by state and oldest waiting task, the running
    /// tasks with their owners and lease ages, and the latest failures.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// How many running and failed tasks to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Run a failed or cancelled task (or a waiting one, now) again, with
    /// its attempts reset.
    Retry {
        /// The task's id.
        id: i64,
    },
    /// Cancel a waiting task, or a running one (its handler stops at its
    /// next step).
    Cancel {
        /// The task's id.
        id: i64,
    },
}

/// Runs a `queue` subcommand.
pub async fn run(cli: &Cli, command: &QueueCommand) -> anyhow::Result<()> {
    let store = cli.open_store().await?;
    let db = store.queue_db();
    match command {
        QueueCommand::Status { json, limit } => {
            let queues = cli.queue.routes().known_queues(std::iter::empty());
            let status = admin::status(&db, &queues, *limit).await.context("cannot read the queue")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
        }
        QueueCommand::Retry { id } => {
            let task = admin::retry(&db, *id).await?;
            println!("{}", describe(&task));
        }
        QueueCommand::Cancel { id } => {
            let task = admin::cancel(&db, *id).await?;
            println!("{}", describe(&task));
        }
    }
    store.close().await;
    Ok(())
}

fn describe(task: &TaskInfo) -> String {
    format!("task {} ({} on {}) is {}", task.id, task.kind, task.queue, task.state)
}

fn seconds(micros: i64) -> String {
    format!("{:.1}s", micros as f64 / 1e6)
}

/// The status as tables.
fn render_status(status: &QueueStatus) -> String {
    let mut out = String::new();
    let width = status.queues.iter().map(|q| q.queue.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!("{:width$}", "queue"));
    for state in STATES {
        out.push_str(&format!(" {state:>9}"));
    }
    out.push_str("  oldest waiting\n");
    for depth in &status.queues {
        out.push_str(&format!("{:width$}", depth.queue));
        for state in STATES {
            out.push_str(&format!(" {:>9}", depth.count(state)));
        }
        let oldest = depth.oldest_waiting.map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        out.push_str(&format!("  {oldest}\n"));
    }
    out.push_str(&format!("\nrunning: {}\n", status.running.len()));
    for task in &status.running {
        out.push_str(&format!(
            "  {} {} on {}, attempt {}, owner {}, running for {}, lease left {}\n",
            task.id,
            task.kind,
            task.queue,
            task.attempt,
            task.lease_owner.as_deref().unwrap_or("-"),
            seconds(task.running_for),
            seconds(task.lease_left),
        ));
    }
    out.push_str(&format!("\nfailed (latest {}):\n", status.failed.len()));
    for task in &status.failed {
        out.push_str(&format!(
            "  {} {} on {}, {} attempt(s): {}\n",
            task.id,
            task.kind,
            task.queue,
            task.attempt,
            task.last_error.as_deref().unwrap_or("-"),
        ));
    }
    out
}
