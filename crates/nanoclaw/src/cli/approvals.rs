//! `nanoclaw approvals`: list approval requests and answer them as a terminal approver.

use std::process::ExitCode;

use anyhow::Context;

use crate::agent::approvals;
use crate::audit;
use crate::channels::approval_text::describe_tally;
use crate::cli::*;
use crate::config::home::Home;
use crate::config::policy_file;
use crate::display;
use crate::store::Store;

pub fn approvals_command(home: &Home, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    use nanoclaw_core::approval::Vote;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = policy_file::load(
        home,
        &crate::app::vocabulary_for(&crate::app::load_config(home)?),
    )?;
    let store = Store::open(&home.db_path())
        .with_context(|| format!("opening {}", home.db_path().display()))?;
    let (key, approver, vote) = match command {
        ApprovalsCommand::List { all } => {
            let requests = approvals::list(&store, all)?;
            if requests.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no requests"
                    } else {
                        "no pending requests"
                    }
                );
            }
            for r in requests {
                println!(
                    "{} [{}] {}: group {} tool {} {}
  why: {}
  approvers: {} ({} needed)",
                    r.id,
                    r.code,
                    r.status,
                    r.group,
                    r.tool,
                    display::for_terminal(&r.arguments.to_string()),
                    display::for_terminal(&r.reason),
                    r.approvers.join(", "),
                    r.quorum
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Approve {
            id,
            always,
            approver,
        } => (id, approver, Vote::Approve { always }),
        ApprovalsCommand::Deny { id, approver } => (id, approver, Vote::Deny),
    };
    let audit = audit::Audit::open(&home.db_path(), nanoclaw_core::secret::Replacer::default())?;
    let result = approvals::answer(
        &store,
        &audit,
        &policy,
        &key,
        &approvals::Answerer::AtTerminal {
            channel: "cli",
            named: approver.as_deref(),
        },
        vote,
    );
    audit.close();
    match result {
        Ok(tally) => {
            println!("{}", describe_tally(&tally));
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (approvals::AnswerError::NotFound(_) | approvals::AnswerError::WhichApprover(_)),
        ) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}
