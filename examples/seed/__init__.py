"""The seed plan's Celery configuration, verbatim: what `prioroute check` is for.

From ``../shared/seed/000_c386d94fdf242132.txt`` (the AnsFlow team's RabbitMQ plan):
``settings/base.py``'s broker URLs, then ``celery.py``'s queues and routes, then its
"reliability" block, in the order the plan gives them. Only the app and its seven tasks
are added, so that Celery knows the task names the routes mention. Nothing here is
prioroute: run ``prioroute check examples.seed`` to see what is wrong with it.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

CELERY_BROKER_URL = "amqp://ansflow:ansflow_rabbitmq_123@localhost:5672//"
CELERY_RESULT_BACKEND = "redis://localhost:6379/0"

app = Celery("ansflow_seed", broker=CELERY_BROKER_URL, backend=CELERY_RESULT_BACKEND)

# celery.py 中的队列配置
app.conf.task_routes = {
    # 高优先级任务队列
    "cicd_integrations.tasks.execute_pipeline_async": {"queue": "pipeline_execution"},
    "kubernetes_integration.tasks.deploy_application": {"queue": "deployment"},
    "ansible_integration.tasks.run_playbook": {"queue": "configuration"},
    # 普通优先级任务队列
    "cicd_integrations.tasks.health_check_tools": {"queue": "monitoring"},
    "settings_management.tasks.backup_data": {"queue": "maintenance"},
    # 低优先级任务队列
    "cicd_integrations.tasks.cleanup_old_executions": {"queue": "cleanup"},
    "audit.tasks.cleanup_old_logs": {"queue": "cleanup"},
}

app.conf.task_default_queue = "default"
app.conf.task_queues = (
    # 高优先级队列
    Queue(
        "pipeline_execution", Exchange("pipeline"), routing_key="pipeline.execution", priority=10
    ),
    Queue("deployment", Exchange("ops"), routing_key="ops.deploy", priority=9),
    Queue("configuration", Exchange("ops"), routing_key="ops.config", priority=8),
    # 普通优先级队列
    Queue("monitoring", Exchange("system"), routing_key="system.monitor", priority=5),
    Queue("maintenance", Exchange("system"), routing_key="system.maintenance", priority=5),
    # 低优先级队列
    Queue("cleanup", Exchange("system"), routing_key="system.cleanup", priority=1),
    Queue("default", Exchange("default"), routing_key="default", priority=3),
)

# Celery配置增强
app.conf.update(
    # 消息持久化
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    # 任务确认和重试
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_retry_delay=60,
    task_max_retries=3,
    # 结果存储
    result_backend_transport_options={
        "master_name": "mymaster",
        "visibility_timeout": 3600,
    },
    # 路由配置
    task_routes={
        "critical.*": {"queue": "critical"},
        "normal.*": {"queue": "normal"},
        "low.*": {"queue": "low"},
    },
)

TASK_NAMES = (
    "cicd_integrations.tasks.execute_pipeline_async",
    "kubernetes_integration.tasks.deploy_application",
    "ansible_integration.tasks.run_playbook",
    "cicd_integrations.tasks.health_check_tools",
    "settings_management.tasks.backup_data",
    "cicd_integrations.tasks.cleanup_old_executions",
    "audit.tasks.cleanup_old_logs",
)


def _define(name: str) -> None:
    @app.task(name=name, shared=False)
    def task(*args: object, **kwargs: object) -> None:
        """The real task lives in the AnsFlow code base; only its name matters here."""


for _name in TASK_NAMES:
    _define(_name)
