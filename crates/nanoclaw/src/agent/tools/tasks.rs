//! The task tools: `schedule_task`, `list_tasks`, `cancel_task`, on the group's own tasks in
//! the store. A task made here keeps the role and taint of the turn that made it.

use nanoclaw_core::GroupId;

use super::{CallContext, ToolOutcome, Tools};
use crate::store::tasks::When;

impl Tools {
    /// A task made here runs with this turn's sender role, and its prompt counts as outside
    /// content when this turn has read any: a tainted turn cannot launder its taint through a
    /// schedule.
    pub(super) fn schedule_task(
        &self,
        ctx: &CallContext<'_>,
        name: String,
        prompt: String,
        when: When,
        isolated: bool,
        silent: bool,
    ) -> ToolOutcome {
        use crate::store::tasks::NewTask;
        let group = ctx.group;
        let new = NewTask {
            group: group.to_string(),
            name,
            when,
            prompt,
            isolated,
            post: !silent,
            catch_up: true,
            role: ctx.sender,
            tainted: ctx.tainted,
        };
        match crate::store::tasks::add(&self.store, &new, crate::store::now()) {
            Ok(task) => {
                self.tasks_changed.notify_one();
                ToolOutcome::ok(format!(
                    "scheduled task {} ({}), first run at {}",
                    task.id,
                    task.name,
                    task.next_due
                        .map(crate::audit::format_time)
                        .unwrap_or_default()
                ))
            }
            Err(e) => ToolOutcome::error(format!("could not schedule: {e}")),
        }
    }

    pub(super) fn list_tasks(&self, group: &GroupId) -> ToolOutcome {
        match crate::store::tasks::list(&self.store, Some(group.as_str())) {
            Ok(tasks) if tasks.is_empty() => ToolOutcome::ok("no tasks"),
            Ok(tasks) => {
                // A task a tainted turn (or someone else) wrote is outside content: listing it
                // taints the turn that reads it, and its text is wrapped as such.
                let outside = tasks
                    .iter()
                    .any(|t| t.tainted || t.role == nanoclaw_core::policy::SenderRole::Other);
                let mut outcome = ToolOutcome::ok(
                    tasks
                        .iter()
                        .map(|t| {
                            format!(
                                "{} {} [{}] {} {}: next {}: {}",
                                t.id,
                                t.name,
                                t.status,
                                t.kind,
                                t.spec,
                                t.next_due
                                    .map(crate::audit::format_time)
                                    .unwrap_or_else(|| "-".into()),
                                t.prompt
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                outcome.outside = outside;
                outcome
            }
            Err(e) => ToolOutcome::error(format!("could not list tasks: {e}")),
        }
    }

    pub(super) fn cancel_task(&self, group: &GroupId, id: i64) -> ToolOutcome {
        match crate::store::tasks::set_status(
            &self.store,
            id,
            "removed",
            Some(group.as_str()),
            crate::store::now(),
        ) {
            Ok(_) => {
                self.tasks_changed.notify_one();
                ToolOutcome::ok(format!("task {id} removed"))
            }
            Err(e) => ToolOutcome::error(format!("could not cancel task {id}: {e}")),
        }
    }
}
