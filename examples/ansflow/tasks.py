"""The seven tasks of the AnsFlow plan, each in the tier the plan meant for it."""

from __future__ import annotations

from examples.ansflow import app, registry


# High priority: pipeline runs, deployments, configuration runs.
@registry.critical
@app.task(name="cicd_integrations.tasks.execute_pipeline_async")
def execute_pipeline_async(pipeline_id: int) -> str:
    return f"pipeline {pipeline_id} executed"


@registry.critical
@app.task(name="kubernetes_integration.tasks.deploy_application")
def deploy_application(application: str) -> str:
    return f"{application} deployed"


@registry.critical
@app.task(name="ansible_integration.tasks.run_playbook")
def run_playbook(playbook: str) -> str:
    return f"{playbook} ran"


# Normal priority: monitoring and backups.
@registry.normal
@app.task(name="cicd_integrations.tasks.health_check_tools")
def health_check_tools() -> str:
    return "tools healthy"


@registry.normal
@app.task(name="settings_management.tasks.backup_data")
def backup_data() -> str:
    return "backed up"


# Low priority: housekeeping, in its own lane.
@registry.low(queue="cleanup")
@app.task(name="cicd_integrations.tasks.cleanup_old_executions")
def cleanup_old_executions(days: int = 30) -> str:
    return f"executions older than {days} days removed"


# A task written without prioroute (say, by another team): registered by name instead.
@app.task(name="audit.tasks.cleanup_old_logs")
def cleanup_old_logs(days: int = 90) -> str:
    return f"audit logs older than {days} days removed"


registry.register("audit.tasks.cleanup_old_logs", "low", queue="cleanup")
